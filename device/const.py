"""The device's copy of the wire contract (proto/ cannot be imported on MicroPython).

Naming: enum members get a prefix naming their enum, plain constants keep proto's name.
  R_*   proto.keys.ReportKey      C_*   proto.keys.CmdKey      M_*   proto.keys.ManifestKey
  ST_*  proto.codes.State         RES_* proto.codes.Result      OP_*  proto.codes.Op
  PH_*  proto.codes.Phase
  COMP_* proto.codes.Compression  CAP_* proto.codes.Cap
  REPORT, COMMAND, FIRMWARE, ETAG_BYTES, IMAGE_ID_HEX, DEFAULT_DEVICE_PORT  (proto.uris)
  MANIFEST_VERSION (proto.keys); MAX_REPORT (proto.control); COSE_*, PROTECTED, KID_BYTES,
  MAX_MANIFEST (proto.manifest).
tests/test_proto_device_agree.py proves every value equals proto's and nothing is missing.
"""

R_ID = 1
R_CLASS = 2
R_SEQ = 3
R_STATE = 4
R_RESULT = 5
R_PROGRESS = 6
R_JOB = 7
R_SIZE = 8
R_TARGET = 9
R_AUTH = 10
R_PHASE = 11
R_CAPS = 12

C_OP = 1
C_JOB = 2
C_MANIFEST = 3
C_WAIT = 4
C_AUTH = 5
C_CEK = 6

M_VERSION = 1
M_SEQ = 2
M_VENDOR = 3
M_CLASS = 4
M_DIGEST = 5
M_SIZE = 6
M_URI = 7
M_COMPRESSION = 8
M_DELTA_BASE = 9
M_ENC_ALG = 16  # encryption block (proto.keys)
M_ENC_IV = 17
M_SENT_DIGEST = 18
M_SENT_SIZE = 19  # compression and deltas (proto.keys)
MANIFEST_VERSION = 1

ST_IDLE = 0
ST_DOWNLOADING = 1
ST_DOWNLOADED = 2
ST_UPDATING = 3

RES_INITIAL = 0
RES_SUCCESS = 1
RES_NO_SPACE = 2
RES_OUT_OF_MEMORY = 3
RES_CONNECTION_LOST = 4
RES_INTEGRITY_FAILURE = 5
RES_UNSUPPORTED_IMAGE = 6
RES_INVALID_URI = 7
RES_UPDATE_FAILED = 8
RES_UNSUPPORTED_PROTOCOL = 9
RES_CANCELLED = 10
RES_DEFERRED = 11
RES_ROLLED_BACK = 20
RES_SIGNATURE_INVALID = 21
RES_DOWNGRADE_REFUSED = 22
RES_WRONG_CLASS = 23
RES_KEY_UNAVAILABLE = 24

PH_BOOT = 1
PH_REPORT = 2
PH_VERIFY = 3
PH_DOWNLOAD = 4
PH_INSTALL = 5

COMP_NONE = 0
COMP_DEFLATE = 1
CAP_DEFLATE = 1
CAP_DELTA = 2

OP_NONE = 0
OP_UPDATE = 1
OP_CANCEL = 2
OP_DEFER = 3

REPORT = "r"
COMMAND = "c"
FIRMWARE = "f"
IMAGE_ID_HEX = 8
ETAG_BYTES = 8
DEFAULT_DEVICE_PORT = 5683
MAX_REPORT = 512

COSE_SIGN1_TAG = 18
COSE_ALG_EDDSA = -8
COSE_HDR_ALG = 1
COSE_HDR_KID = 4
PROTECTED = b"\xa1\x01\x27"
KID_BYTES = 8
MAX_MANIFEST = 1024
