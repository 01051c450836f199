"""Check a signed manifest (COSE_Sign1, EdDSA; see proto/manifest.py) before any download.

Order matters: structure, then signature, and only then the signed fields, so nothing
unauthenticated decides anything beyond "refused". ``check`` returns the manifest map (int keys,
``const.M_*``) or raises ``Refused(result, reason)`` with the LwM2M-style result to report.
``caps`` (``const.CAP_*`` bits) says what the agent can decode: a manifest asking for more, or
carrying a key this agent does not know, is refused with result 6 before anything is fetched.
The unprotected header must be exactly ``{4: kid}``, as proto.manifest requires: it is not
signed, so anything else in it is refused and every flipped bit of a manifest is fatal.
"""

import hashlib

from . import cbor, const, ed25519
from . import drop

A256CTR = -65532  # the one content cipher (device/cipher.py; not imported: cryptolib-free here)


class Refused(Exception):
    def __init__(self, result, reason):
        super().__init__(result, reason)
        self.result = result
        self.reason = reason


def key_id(public):
    return hashlib.sha256(bytes(public)).digest()[:const.KID_BYTES]


def sig_structure(protected, payload):
    return cbor.dumps(["Signature1", protected, b"", payload])


def _bad(reason):
    return Refused(const.RES_UNSUPPORTED_IMAGE, reason)


def _unwrap(signed):
    if not isinstance(signed, (bytes, bytearray)) or len(signed) > const.MAX_MANIFEST:
        raise _bad("manifest too large or not bytes")
    try:
        obj = cbor.loads(signed)
    except cbor.CBORError:
        raise _bad("manifest is not CBOR")
    if not isinstance(obj, cbor.Tag) or obj.tag != const.COSE_SIGN1_TAG:
        raise _bad("not a COSE_Sign1")
    v = obj.value
    if not isinstance(v, list) or len(v) != 4:
        raise _bad("COSE_Sign1 is not an array of 4")
    protected, unprotected, payload, signature = v
    if protected != const.PROTECTED:
        raise _bad("unsupported protected header")
    if not isinstance(unprotected, dict) or list(unprotected.keys()) != [const.COSE_HDR_KID]:
        raise _bad("unprotected header must be {4: kid}")
    kid = unprotected[const.COSE_HDR_KID]
    if not isinstance(kid, bytes) or len(kid) != const.KID_BYTES:
        raise _bad("kid must be 8 bytes")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise _bad("bad payload or signature")
    return protected, kid, payload, signature


_REQUIRED = ((const.M_VERSION, int), (const.M_SEQ, int), (const.M_VENDOR, bytes),
             (const.M_CLASS, bytes), (const.M_DIGEST, bytes), (const.M_SIZE, int),
             (const.M_URI, str))


# Keys this agent understands: 1-9 (8 COMPRESSION and 9 DELTA_BASE: issue 12), 16-18
# (encryption, 18 SENT_DIGEST shared with issue 12), 19 SENT_SIZE (issue 12). Any other signed
# key is a field it cannot honour: result 6.
def _known(k):
    return isinstance(k, int) and (0 < k < 10 or 15 < k < 20)


def _sent(m, caps):
    """Refuse, before any download, a transfer this device cannot decode (issue 12). A value
    of a wrong type raises TypeError, which the agent reports as 6 too."""
    comp = m.get(const.M_COMPRESSION, 0)
    base = m.get(const.M_DELTA_BASE)
    if (comp or base is not None) and (
            comp not in (0, 1) or comp and not caps & const.CAP_DEFLATE
            or base is not None and (not caps & const.CAP_DELTA or len(base) != 32)
            or len(m.get(const.M_SENT_DIGEST, b"")) != 32 or m.get(const.M_SENT_SIZE, 0) < 1):
        raise _bad("transfer")


def check(signed, trusted, vendor_id, class_id, installed_seq, tables, caps=0):
    protected, kid, payload, signature = _unwrap(signed)
    drop("cbordecode")  # not in the heap with the signature's maths: loaded again after it
    message = sig_structure(protected, payload)
    for pub in trusted:
        if key_id(pub) != kid:
            continue
        if ed25519.verify(pub, message, signature, tables):
            break
    else:
        raise Refused(const.RES_SIGNATURE_INVALID, "no trusted key verifies the signature")
    try:
        m = cbor.loads(payload)
    except cbor.CBORError:
        raise _bad("manifest payload is not CBOR")
    if not isinstance(m, dict):
        raise _bad("manifest payload is not a map")
    for k, t in _REQUIRED:
        x = m.get(k)
        if not isinstance(x, t) or isinstance(x, bool):
            raise _bad("manifest field %d missing or of the wrong type" % k)
    for k in m:
        if not _known(k):
            raise _bad("field")
    _sent(m, caps)
    if m[const.M_VERSION] != const.MANIFEST_VERSION:
        raise _bad("unsupported manifest version %d" % m[const.M_VERSION])
    if len(m[const.M_DIGEST]) != 32 or m[const.M_SIZE] < 0:
        raise _bad("bad digest or size")
    if const.M_ENC_ALG in m or const.M_ENC_IV in m:
        iv = m.get(const.M_ENC_IV)
        if (m.get(const.M_ENC_ALG) != A256CTR or not isinstance(iv, bytes) or len(iv) != 16
                or not isinstance(m.get(const.M_SENT_DIGEST), bytes)):
            raise _bad("unsupported or malformed encryption")
    if m[const.M_VENDOR] != bytes(vendor_id) or m[const.M_CLASS] != bytes(class_id):
        raise Refused(const.RES_WRONG_CLASS, "vendor or class id does not match this device")
    if m[const.M_SEQ] <= installed_seq:
        raise Refused(const.RES_DOWNGRADE_REFUSED,
                      "sequence %d is not newer than %d" % (m[const.M_SEQ], installed_seq))
    return m
