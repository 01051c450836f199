"""The signed manifest: a flat CBOR map (SUIT vocabulary) wrapped in COSE_Sign1 with EdDSA.

Encoding, chosen so a device can verify it in a few hundred bytes of pure MicroPython:

    COSE_Sign1 = #6.18([ protected: bstr(.cbor {1: -8}),   ; alg: EdDSA
                         unprotected: {4: kid},            ; exactly this; kid: 8 bytes, key_id()
                         payload: bstr(.cbor manifest map),
                         signature: bstr(64) ])
    Sig_structure = ["Signature1", protected, h'', payload]   ; RFC 9052 section 4.4

The manifest map uses ``keys.ManifestKey`` with deterministic encoding (RFC 8949 section 4.2:
shortest forms, keys in ascending order). The signature is Ed25519 over the encoded
Sig_structure, so the device hashes only that small structure with SHA-512, and streams the
image through SHA-256 separately.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .codes import Compression
from .control import DEFAULT_VENDOR  # noqa: F401 (the vendor of manifests cc signs by default)
from .keys import MANIFEST_VERSION, ManifestKey

COSE_SIGN1_TAG = 18
COSE_ALG_EDDSA = -8
COSE_HDR_ALG = 1
COSE_HDR_KID = 4
PROTECTED = cbor2.dumps({COSE_HDR_ALG: COSE_ALG_EDDSA})  # b"\xa1\x01\x27"
KID_BYTES = 8
MAX_MANIFEST = 1024  # bytes of COSE_Sign1; devices refuse larger
A256CTR = -65532  # COSE alg (RFC 9459) of the content cipher of encrypted images (ENC_ALG)
IV_BYTES = 16


class ManifestError(ValueError):
    """A manifest that does not parse, is not signed by a trusted key, or is malformed."""


def vendor_id(vendor: str) -> bytes:
    """SUIT vendor id: UUID5 in the DNS namespace of the vendor's domain name."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, vendor).bytes


def class_id(vendor: str, device_class: str) -> bytes:
    """SUIT class id: UUID5 under the vendor id, named by the class (model) string."""
    return uuid.uuid5(uuid.UUID(bytes=vendor_id(vendor)), device_class).bytes


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: bytes) -> bytes:
    """kid: the first 8 bytes of SHA-256 of the raw public key (lets a device pick its key)."""
    return hashlib.sha256(public).digest()[:KID_BYTES]


def build(
    *,
    seq: int,
    vendor: str,
    device_class: str,
    digest: bytes,
    size: int,
    uri: str,
    compression: int | None = None,
    delta_base: bytes | None = None,
    encryption: tuple[bytes, bytes] | None = None,
    sent_digest: bytes | None = None,
    sent_size: int | None = None,
) -> dict[int, Any]:
    """The manifest map. ``encryption`` = (IV, SHA-256 of the ciphertext): the URI serves the
    image encrypted with A256CTR; ``digest`` and ``size`` stay those of the image installed."""
    if not 0 <= seq < 2**63:
        raise ManifestError("sequence number must be a non-negative 63-bit integer")
    if len(digest) != 32:
        raise ManifestError("digest must be 32 bytes (SHA-256)")
    m: dict[int, Any] = {
        ManifestKey.VERSION: MANIFEST_VERSION,
        ManifestKey.SEQ: seq,
        ManifestKey.VENDOR: vendor_id(vendor),
        ManifestKey.CLASS: class_id(vendor, device_class),
        ManifestKey.DIGEST: digest,
        ManifestKey.SIZE: size,
        ManifestKey.URI: uri,
    }
    # -- compression and deltas (issue 12): what is sent differs from the image installed
    if compression is not None:
        m[ManifestKey.COMPRESSION] = compression
    if delta_base is not None:
        m[ManifestKey.DELTA_BASE] = delta_base
    if encryption is not None:
        iv, sent = encryption
        if len(iv) != IV_BYTES or len(sent) != 32:
            raise ManifestError("encryption needs a 16-byte IV and a 32-byte ciphertext digest")
        m[ManifestKey.ENC_ALG] = A256CTR
        m[ManifestKey.ENC_IV] = iv
        m[ManifestKey.SENT_DIGEST] = sent
    # -- compression and deltas (issue 12): what is sent differs from the image installed
    if sent_digest is not None:
        if m.setdefault(ManifestKey.SENT_DIGEST, sent_digest) != sent_digest:
            raise ManifestError("encryption and sent_digest name different bytes sent")
    if sent_size is not None:
        m[ManifestKey.SENT_SIZE] = sent_size
    out = {int(k): v for k, v in m.items()}
    _check_sent(out)
    return out


def _check_sent(m: Mapping[int, Any]) -> None:
    """The issue-12 keys: typed, and a transfer that is not the image names its own digest/size."""
    c = m.get(ManifestKey.COMPRESSION)
    if c is not None and (isinstance(c, bool) or c not in Compression._value2member_map_):
        raise ManifestError(f"unknown compression {c!r}")
    base = m.get(ManifestKey.DELTA_BASE)
    if base is not None and not (isinstance(base, bytes) and len(base) == 32):
        raise ManifestError("delta base must be 32 bytes (SHA-256)")
    d, n = m.get(ManifestKey.SENT_DIGEST), m.get(ManifestKey.SENT_SIZE)
    if n is not None and d is None:
        raise ManifestError("a sent size needs the sent digest")
    if d is not None and not (isinstance(d, bytes) and len(d) == 32):
        raise ManifestError("sent digest must be 32 bytes (SHA-256)")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
        raise ManifestError("sent size must be a positive integer")
    if (c or base is not None) and (d is None or n is None):
        raise ManifestError("a compressed or delta transfer needs sent digest and size")


def is_full(m: Mapping[int, Any]) -> bool:
    """True when the bytes sent are the image itself (no compression, no delta)."""
    return not m.get(ManifestKey.COMPRESSION) and m.get(ManifestKey.DELTA_BASE) is None


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign(manifest: dict[int, Any], key: Ed25519PrivateKey) -> bytes:
    """Encode the manifest deterministically and wrap it in a COSE_Sign1 signed with ``key``."""
    payload = cbor2.dumps(dict(sorted(manifest.items())), canonical=True)
    signature = key.sign(sig_structure(PROTECTED, payload))
    kid = key_id(public_bytes(key.public_key()))
    out = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [PROTECTED, {COSE_HDR_KID: kid}, payload, signature]))
    if len(out) > MAX_MANIFEST:
        raise ManifestError(f"signed manifest is {len(out)} bytes, the limit is {MAX_MANIFEST}")
    return out


def unwrap(signed: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Split a COSE_Sign1 into (protected, kid, payload, signature) without verifying it."""
    if len(signed) > MAX_MANIFEST:
        raise ManifestError("manifest too large")
    try:
        obj = cbor2.loads(signed)
    except Exception as e:  # cbor2 raises several types; all mean the same thing here
        raise ManifestError(f"manifest is not CBOR: {e}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise ManifestError("manifest is not a COSE_Sign1 (tag 18)")
    v = obj.value
    if not (isinstance(v, (list, tuple)) and len(v) == 4):
        raise ManifestError("COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = v
    if protected != PROTECTED:
        raise ManifestError("unsupported protected header (only alg EdDSA)")
    # Strict: exactly {4: kid}. The unprotected header is not signed, so anything else in it is
    # either an attack or a bug; refusing it makes every flipped bit of a manifest fatal.
    if not isinstance(unprotected, Mapping) or list(unprotected.keys()) != [COSE_HDR_KID]:
        raise ManifestError("unprotected header must be exactly {4: kid}")
    kid = unprotected[COSE_HDR_KID]
    if not isinstance(kid, bytes) or len(kid) != KID_BYTES:
        raise ManifestError("kid must be 8 bytes")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise ManifestError("bad payload or signature")
    return protected, kid, payload, signature


def decode_payload(payload: bytes) -> dict[int, Any]:
    try:
        m = cbor2.loads(payload)
    except Exception as e:
        raise ManifestError(f"manifest payload is not CBOR: {e}") from None
    if not isinstance(m, Mapping):
        raise ManifestError("manifest payload must be a map")
    m = dict(m)
    required = {
        ManifestKey.VERSION: int,
        ManifestKey.SEQ: int,
        ManifestKey.VENDOR: bytes,
        ManifestKey.CLASS: bytes,
        ManifestKey.DIGEST: bytes,
        ManifestKey.SIZE: int,
        ManifestKey.URI: str,
    }
    for k, t in required.items():
        if not isinstance(m.get(int(k)), t) or isinstance(m.get(int(k)), bool):
            raise ManifestError(f"manifest field {k.name.lower()} missing or not {t.__name__}")
    if m[ManifestKey.VERSION] != MANIFEST_VERSION:
        raise ManifestError(f"unsupported manifest version {m[ManifestKey.VERSION]}")
    if len(m[ManifestKey.DIGEST]) != 32:
        raise ManifestError("digest must be 32 bytes")
    _check_encryption(m)
    _check_sent(m)
    return m


_ENC_KEYS = (ManifestKey.ENC_ALG, ManifestKey.ENC_IV, ManifestKey.SENT_DIGEST)


def _check_encryption(m: dict[int, Any]) -> None:
    present = [k for k in _ENC_KEYS if int(k) in m]
    if not present or present == [ManifestKey.SENT_DIGEST]:  # a SENT_DIGEST alone: issue 12's
        return
    if len(present) != len(_ENC_KEYS):
        raise ManifestError("encryption fields must come together (alg, iv, sent digest)")
    if m[ManifestKey.ENC_ALG] != A256CTR:
        raise ManifestError(f"unsupported content cipher {m[ManifestKey.ENC_ALG]!r}")
    iv, sent = m[ManifestKey.ENC_IV], m[ManifestKey.SENT_DIGEST]
    if not (isinstance(iv, bytes) and len(iv) == IV_BYTES
            and isinstance(sent, bytes) and len(sent) == 32):
        raise ManifestError("encryption iv must be 16 bytes and the sent digest 32")


def sent_digest(m: dict[int, Any]) -> bytes:
    """SHA-256 of the bytes the URI serves: the ciphertext if encrypted, else the image."""
    return m.get(int(ManifestKey.SENT_DIGEST), m[ManifestKey.DIGEST])


def encrypted(m: dict[int, Any]) -> bool:
    return int(ManifestKey.ENC_ALG) in m


def parse(signed: bytes) -> dict[int, Any]:
    """Decode without checking the signature (the gateway indexes manifests it cannot sign)."""
    return decode_payload(unwrap(signed)[2])


def verify(signed: bytes, trusted: list[bytes]) -> dict[int, Any]:
    """Check the signature against any of the ``trusted`` raw public keys; return the manifest."""
    protected, kid, payload, signature = unwrap(signed)
    message = sig_structure(protected, payload)
    for pub in trusted:
        if key_id(pub) != kid:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(signature, message)
        except InvalidSignature:
            continue
        return decode_payload(payload)
    raise ManifestError("signature does not verify with any trusted key")
