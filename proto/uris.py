"""URIs. Device-side paths are one or two characters: they ride in every block request."""

# Device API (the gateway's device bind, default [::]:5683)
REPORT = "r"  # POST: report, response carries the pending command
COMMAND = "c"  # GET c/<device id>: observable command resource for mains-powered devices
FIRMWARE = "f"  # GET f/<image id>: Block2 random access

IMAGE_ID_HEX = 8  # image id: first 8 hex characters of the SHA-256 digest
ETAG_BYTES = 8  # ETag of an image: first 8 bytes of its digest

# Control API (the gateway's control bind, default 127.0.0.1:5684; cc only)
BLOB = "blob"  # PUT blob/<sha256 hex>: Block1 upload of an image
FW = "fw"  # POST: register a signed manifest; GET: list images; POST fw/<id>/keys: wrapped
# content keys of an encrypted image ({recipient: bstr(40)}, gateway/wrapped.py)
DEV = "dev"  # GET: list devices; POST: add (enrol) a device; GET dev/<id>: show one
CAMP = "camp"  # POST: start an upgrade; GET: list; GET camp/<n>; POST camp/<n>/cancel
EVENTS = "ev"  # GET ev?since=<unix time>: the event log

DEFAULT_DEVICE_PORT = 5683
DEFAULT_CONTROL_PORT = 5684


def device_address(uri: str) -> tuple[str, int]:
    """A gateway's device port as given to a simulator: coap://HOST[:PORT] (or HOST[:PORT];
    an IPv6 literal in brackets) -> (host, port); ValueError for anything else."""
    from urllib.parse import urlsplit

    u = urlsplit(uri if "://" in uri else "coap://" + uri)
    if u.scheme != "coap" or not u.hostname:
        raise ValueError(f"gateway must be coap://HOST[:PORT], not {uri!r}")
    return u.hostname, u.port or DEFAULT_DEVICE_PORT


def image_id(digest: bytes) -> str:
    return digest.hex()[:IMAGE_ID_HEX]


def image_path(digest: bytes) -> str:
    """The URI-reference a manifest carries: resolved against the gateway the device talks to."""
    return "/" + FIRMWARE + "/" + image_id(digest)


def etag(digest: bytes) -> bytes:
    return digest[:ETAG_BYTES]
