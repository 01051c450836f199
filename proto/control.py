"""Control API contract (gateway control bind <-> cc). CBOR maps with text keys: scripts read
them back as JSON, so names beat bytes here. Errors: a 4.xx/5.xx code with a one-line UTF-8
diagnostic payload (RFC 7252 section 5.5.2) that cc prints as it is. Answers longer than one
datagram (listings) come Block2-wise and request bodies over one block go Block1-wise: clients
must reassemble (aiocoap's client does).

PUT  blob/<sha256 hex>   Block1 upload of an image (streamed to a temp file, never held in RAM).
                         2.31 Continue per block (again for a repeat of the last block),
                         2.04 {"digest", "size"} at the end; 4.08 for a gap.
                         4.13 (with Size1) past MAX_IMAGE; 4.00 when the bytes do not hash to the
                         digest in the path; 5.03 + Max-Age when the disk is full.
POST fw                  {"manifest": bstr COSE_Sign1, "class": str, "vendor": str,
                          "label"?: str (MAX_LABEL), "notes"?: str (MAX_NOTES),
                          "supersede"?: true (the image is registered already: re-sign it at a
                          higher seq, same class and vendor; 4.09 while a campaign uses it)}
                         -> 2.01 IMAGE; 4.00 bad manifest / class-vendor ids that do not match the
                         names / blob missing or of another size; 4.09 another image holds the id.
GET  fw                  -> 2.05 [IMAGE, ...]
DELETE fw/<id>           -> 2.02 {"id", "campaigns_removed": [n], "blob_deleted": bool}: the
                         image with its finished campaigns and their jobs (events stay), its
                         blob once no image refers to it; 4.09 while a running or paused
                         campaign uses it; 4.04 unknown
POST fw/<id>/deltas      {} -> 2.04 [VARIANT, ...]: builds the deltas to image <id> from the
                         newest earlier images of its class (gateway/deltas.py) and lists them
GET  fw/<id>/deltas      -> 2.05 [VARIANT, ...] (GET fw/-/deltas: of every image)
POST fw/<id>/variants    {"manifest": bstr}: cc's signed manifest of a compressed image (its
                         blob uploaded) or of a built delta -> 2.01 VARIANT; 4.00 fields that
                         do not match the image or the stored blob
GET  dev?<options>       -> 2.05 [DEVICE, ...] ordered by id, at most 1000 (DEVICES_PAGE);
                         options: offset=n, limit=n, state=<name>, class=<c>, tag=<t>,
                         campaign=<n> (filters combine); with "summary": {"total",
                         "by_state": {name: n}, "by_class": {class: n}} instead; 4.00 bad option
POST dev                 {"id": str, "class": str, "tags"?: [str]} -> 2.01 DEVICE (enrol)
DELETE dev/<id>          -> 2.02 {"id", "jobs_removed"}: decommission (the device, its report key
                         and finished jobs; its events stay); 4.09 while it has an unfinished
                         job; 4.04 unknown
GET  dev/<id>            -> 2.05 DEVICE + {"jobs": [JOB...], "events": [EVENT...]}; 4.04 unknown
POST dev/<id>/tags       {"add"?: [tag], "remove"?: [tag]} -> 2.04 DEVICE; 4.04 unknown device
POST camp                {"image": id, targets: "devices": [id] | "class": str and/or
                          "tags": [tag] (devices carrying every tag) | "all": true,
                          "timeout"?: seconds, policy (all optional, see gateway/rollout.py):
                          "canary"?: n devices first, "wave"?: n | "P%" per later phase,
                          "success_rate"?: percent of a phase that must succeed before the
                          next starts (100), "max_failures"?: n | "P%" of released devices
                          (reached: the campaign pauses itself), "max_downloads"?: n concurrent,
                          "defer"?: seconds a device over a cap waits (60),
                          "offer_timeout"?: seconds before an offer whose download did not
                          start goes back to the queue, freeing its slot (600),
                          "window"?: {"start": 5-field cron, "duration": s, "tz"?: IANA zone}}
                         -> 2.01 CAMPAIGN (without jobs); targets that reported the image's
                         seq or a newer one get "skipped" jobs at once
                         4.04 unknown image or device; 4.00 no target / class mismatch / policy
                         / a window that cannot open before the deadline; 4.09 no target can
                         take the image (all already run its seq or newer) / its blob is bad
GET  camp                -> 2.05 [CAMPAIGN, ...] (without jobs)
GET  camp/<n>[?jobs=K]   -> 2.05 CAMPAIGN with "jobs": at most K (default and most 1000), those
                         not succeeded first ("total", "counts" and "phases" count them all:
                         what `cc status` shows of a campaign of 100,000); 4.04 unknown
POST camp/<n>/cancel     -> 2.04 CAMPAIGN
POST camp/<n>/pause      -> 2.04 CAMPAIGN; 4.09 not running (no new offers; downloads go on)
POST camp/<n>/resume     -> 2.04 CAMPAIGN; 4.09 not paused, or its image's blob is still bad
                         (failures so far acknowledged; a phase stalled below its success rate
                         is passed over)
POST camp/<n>/retry      -> 2.04 CAMPAIGN; 4.09 nothing to retry / cancelled / past deadline
                         (failed and timed-out jobs become new queued jobs)
GET  ev?since=<unix s>   -> 2.05 [EVENT, ...] oldest first, at most EVENTS_PAGE

IMAGE    {"id", "uri", "digest" (hex), "size", "seq", "class", "vendor", "created",
          "problem": why its blob cannot be served or null}; POST fw adds "device_port" (the
          device bind's port, for the URI people fetch the image at)
DEVICE   {"id", "class", "seq", "state" (name), "result" (name), "progress", "last_seen",
          "address", "enrolled" (bool), "tags"}; GET dev adds "note": why a paused campaign
          holds it ("campaign 3 paused: …") or null
CAMPAIGN {"id", "image", "state", "created", "deadline", "counts": {job state: n}, "total",
          "policy": {...as given, amounts as text}, "reason": why it paused or null,
          "phases": [{"name", "total", "counts", "released" (bool)}],
          "window_open"?, "window_next"? (with a window), "jobs"?: [JOB]}
JOB      {"id", "campaign", "device", "phase", "state" (codes.JobState; "skipped": the device
          already ran the image's seq or a newer one), "result" (name or null), "progress",
          "size" (bytes to send), "updated", "sent" ("full" | "deflate" | "delta" | null:
          what it was offered)}
EVENT    {"id", "time", "device" or null, "campaign" or null, "kind", "detail"}
VARIANT  {"id" ("<image>.<base or full>"), "uri" (id of the blob under f/), "image", "kind" ("deflate" | "delta"), "base" (hex or null),
          "compression", "sent" (hex digest), "sent_size", "signed" (bool), "created"}
"""

MAX_IMAGE = 8 * 1024 * 1024  # bytes: a 4 MiB flash holds two slots of at most ~1.9 MiB
MAX_BODY = 4096  # bytes: any other control request payload
MAX_LABEL = 64  # characters of an image's human version label
DEFAULT_VENDOR = "fota-micropython.example"  # POST fw "vendor" when the operator gives none
MAX_NOTES = 2048  # characters of an image's release notes
MAX_REPORT = 512  # bytes: a device report payload
EVENTS_PAGE = 1000
DEFAULT_TIMEOUT = 3600  # seconds a campaign waits for a device before marking it timed out
