"""Control API contract (gateway control bind <-> cc). CBOR maps with text keys: scripts read
them back as JSON, so names beat bytes here. Errors: a 4.xx/5.xx code with a one-line UTF-8
diagnostic payload (RFC 7252 section 5.5.2) that cc prints as it is.

PUT  blob/<sha256 hex>   Block1 upload of an image (streamed to a temp file, never held in RAM).
                         2.31 Continue per block, 2.04 {"digest", "size"} at the end.
                         4.13 (with Size1) past MAX_IMAGE; 4.00 when the bytes do not hash to the
                         digest in the path; 5.03 + Max-Age when the disk is full.
POST fw                  {"manifest": bstr COSE_Sign1, "class": str, "vendor": str}
                         -> 2.01 IMAGE; 4.00 bad manifest / class-vendor ids that do not match the
                         names / blob missing or of another size; 4.09 another image holds the id.
GET  fw                  -> 2.05 [IMAGE, ...]
GET  dev                 -> 2.05 [DEVICE, ...]
POST dev                 {"id": str, "class": str, "tags"?: [str]} -> 2.01 DEVICE (enrol)
GET  dev/<id>            -> 2.05 DEVICE + {"jobs": [JOB...], "events": [EVENT...]}; 4.04 unknown
POST camp                {"image": id, "devices"?: [id], "class"?: str, "all"?: bool,
                          "timeout"?: seconds} -> 2.01 CAMPAIGN (without jobs)
                         4.04 unknown image or device; 4.00 no target / class mismatch
GET  camp                -> 2.05 [CAMPAIGN, ...] (without jobs)
GET  camp/<n>            -> 2.05 CAMPAIGN with "jobs"; 4.04 unknown
POST camp/<n>/cancel     -> 2.04 CAMPAIGN
GET  ev?since=<unix s>   -> 2.05 [EVENT, ...] oldest first, at most EVENTS_PAGE

IMAGE    {"id", "uri", "digest" (hex), "size", "seq", "class", "vendor", "created"}
DEVICE   {"id", "class", "seq", "state" (name), "result" (name), "progress", "last_seen",
          "address", "enrolled" (bool), "tags"}
CAMPAIGN {"id", "image", "state", "created", "deadline", "counts": {job state: n}, "total",
          "jobs"?: [JOB]}
JOB      {"device", "state" (codes.JobState), "result" (name or null), "progress", "size",
          "updated"}
EVENT    {"id", "time", "device" or null, "campaign" or null, "kind", "detail"}
"""

MAX_IMAGE = 8 * 1024 * 1024  # bytes: a 4 MiB flash holds two slots of at most ~1.9 MiB
MAX_BODY = 4096  # bytes: any other control request payload
MAX_REPORT = 512  # bytes: a device report payload
EVENTS_PAGE = 1000
DEFAULT_TIMEOUT = 3600  # seconds a campaign waits for a device before marking it timed out
