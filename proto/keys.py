"""CBOR integer map keys of the device API (small integers: one byte each on the air)."""

from enum import IntEnum


class ReportKey(IntEnum):
    """Device -> gateway report (CON POST to ``uris.REPORT``)."""

    ID = 1  # tstr, device id
    CLASS = 2  # tstr, device class name (the manifest carries its UUID5)
    SEQ = 3  # uint, sequence number of the running image
    STATE = 4  # uint, codes.State
    RESULT = 5  # uint, codes.Result
    PROGRESS = 6  # uint, bytes of the image held so far
    JOB = 7  # uint, job id this report is about (absent: none)
    SIZE = 8  # uint, image size of that job
    TARGET = 9  # uint, sequence number being installed
    AUTH = 10  # [counter, bstr(16) MAC]: report authentication (gateway/devauth.py)
    PHASE = 11  # uint, codes.Phase: where the wake ran out of RAM (with result out_of_memory)
    # -- compression and deltas (issue 12) --
    CAPS = 12  # uint, codes.Cap bits: what the device can decode (absent: nothing, full images)


class CmdKey(IntEnum):
    """Gateway -> device command (payload of the report response; empty payload: nothing)."""

    OP = 1  # uint, codes.Op
    JOB = 2  # uint, job id to echo in reports
    MANIFEST = 3  # bstr, COSE_Sign1 signed manifest (see proto.manifest)
    WAIT = 4  # uint, seconds before the next wake (DEFER) / hint
    AUTH = 5  # bstr(16), MAC of the response for a device with a key (gateway/devauth.py)
    CEK = 6  # bstr(40), the image's content-encryption key wrapped (A256KW) for this device


class ManifestKey(IntEnum):
    """Keys of the manifest payload (SUIT vocabulary, RFC 9124; a flat map the device can read)."""

    VERSION = 1  # uint, manifest format version (MANIFEST_VERSION)
    SEQ = 2  # uint, sequence number: must be newer than the installed one
    VENDOR = 3  # bstr(16), vendor id: UUID5(NAMESPACE_DNS, vendor name)
    CLASS = 4  # bstr(16), class id: UUID5(vendor id, class name)
    DIGEST = 5  # bstr(32), SHA-256 of the image
    SIZE = 6  # uint, image size in bytes
    URI = 7  # tstr, URI-reference of the image ("/f/<id>": relative to the gateway)
    # -- compression and deltas (issue 12; device/pipe.py): DIGEST and SIZE stay those of the
    # image as installed; the URI serves the bytes sent, named by SENT_DIGEST and SENT_SIZE.
    COMPRESSION = 8  # uint, how the bytes sent are packed: codes.Compression (absent: NONE)
    DELTA_BASE = 9  # bstr(32), SHA-256 of the image the delta applies to (the running one)
    # -- encryption (issue 16; SUIT firmware-encryption draft, RFC 9459): present together or
    # not at all. The URI then serves ciphertext; DIGEST and SIZE stay those of the image as
    # installed, and the CEK reaches each device wrapped, in the command (CmdKey.CEK).
    ENC_ALG = 16  # int, COSE alg of the content cipher: -65532 A256CTR (device/cipher.py)
    ENC_IV = 17  # bstr(16), the initial counter block
    SENT_DIGEST = 18  # bstr(32), SHA-256 of the bytes the URI serves (ciphertext, compressed
    # image or delta as sent; their ETag is its first 8 bytes): encryption and issue 12 share it
    # -- compression and deltas, continued (issue 12) --
    SENT_SIZE = 19  # uint, size of the bytes the URI serves (Size2), with COMPRESSION/DELTA_BASE


MANIFEST_VERSION = 1
