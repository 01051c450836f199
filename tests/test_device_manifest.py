"""device/manifest.py verifies what proto.manifest.sign makes, and refuses each bad case with
the result code the device reports."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import const, manifest
from proto import manifest as pm
from proto.codes import Result

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"device manifest test").digest())
PUB = pm.public_bytes(KEY.public_key())
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"another key").digest())
OTHER_PUB = pm.public_bytes(OTHER.public_key())
VENDOR = pm.vendor_id("acme.example")
CLASS = pm.class_id("acme.example", "esp32")


def _m(**kw) -> dict:
    args = dict(seq=5, vendor="acme.example", device_class="esp32", digest=bytes(range(32)),
                size=1000, uri="/f/00010203")
    args.update(kw)
    return pm.build(**args)


TABLES = ""  # the Ed25519 tables' directory (below)


@pytest.fixture(autouse=True, scope="module")
def _tables(tmp_path_factory: pytest.TempPathFactory) -> None:
    global TABLES
    TABLES = str(tmp_path_factory.mktemp("ed25519"))


def _check(signed: bytes, trusted=(PUB,), installed: int = 4) -> dict:
    return manifest.check(signed, list(trusted), VENDOR, CLASS, installed, TABLES)


def _refused(signed: bytes, **kw) -> int:
    with pytest.raises(manifest.Refused) as e:
        _check(signed, **kw)
    assert e.value.reason
    return e.value.result


def _raw_sign(payload: bytes, unprotected=None, protected=pm.PROTECTED, key=KEY) -> bytes:
    sig = key.sign(pm.sig_structure(protected, payload))
    if unprotected is None:
        unprotected = {4: pm.key_id(pm.public_bytes(key.public_key()))}
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, sig]))


def test_accepts_what_proto_signs() -> None:
    signed = pm.sign(_m(), KEY)
    m = _check(signed, trusted=(OTHER_PUB, PUB))
    assert m == pm.verify(signed, [PUB])
    assert m[const.M_SEQ] == 5 and m[const.M_URI] == "/f/00010203"
    protected, _, payload, _ = pm.unwrap(signed)
    assert manifest.sig_structure(protected, payload) == pm.sig_structure(protected, payload)
    assert manifest.key_id(PUB) == pm.key_id(PUB)


def test_without_kid_refused_like_proto() -> None:
    payload = cbor2.dumps(_m(), canonical=True)
    assert _refused(_raw_sign(payload, unprotected={}), trusted=(OTHER_PUB, PUB)) == Result.UNSUPPORTED_IMAGE


def test_signature_refusals() -> None:
    signed = pm.sign(_m(), KEY)
    assert _refused(signed, trusted=(OTHER_PUB,)) == Result.SIGNATURE_INVALID
    assert _refused(signed, trusted=()) == Result.SIGNATURE_INVALID
    assert _refused(pm.sign(_m(), OTHER)) == Result.SIGNATURE_INVALID
    payload = cbor2.dumps(_m(), canonical=True)
    wrong_kid = _raw_sign(payload, unprotected={4: b"\x00" * 8})
    assert _refused(wrong_kid) == Result.SIGNATURE_INVALID


def test_every_flipped_bit_is_refused() -> None:
    signed = pm.sign(_m(), KEY)
    for i in range(0, len(signed) * 8, 7):
        b = bytearray(signed)
        b[i // 8] ^= 1 << (i % 8)
        assert _refused(bytes(b)) in (Result.SIGNATURE_INVALID, Result.UNSUPPORTED_IMAGE)


def test_malformed_is_unsupported_image() -> None:
    payload = cbor2.dumps(_m(), canonical=True)
    cases = [
        b"", b"\xff", pm.sign(_m(), KEY) + b"\x00", b"\x00" * (const.MAX_MANIFEST + 1),
        cbor2.dumps([1, 2, 3]), cbor2.dumps(cbor2.CBORTag(17, [])),
        cbor2.dumps(cbor2.CBORTag(18, [pm.PROTECTED, {}, payload])),
        _raw_sign(payload, protected=cbor2.dumps({1: -7})),
        _raw_sign(payload, unprotected={4: b"short"}),
        _raw_sign(payload, unprotected={4: pm.key_id(PUB), 5: b"x"}),
        _raw_sign(b"\xa0"),  # signed, but an empty map
        _raw_sign(b"\x80"),  # signed, not a map
        _raw_sign(b"\xff"),  # signed, not CBOR
        _raw_sign(cbor2.dumps({**_m(), 1: 2}, canonical=True)),  # version 2
        _raw_sign(cbor2.dumps({**_m(), 2: "5"}, canonical=True)),  # seq of the wrong type
        _raw_sign(cbor2.dumps({**_m(), 5: b"short"}, canonical=True)),
    ]
    for c in cases:
        assert _refused(c) == Result.UNSUPPORTED_IMAGE, c.hex()


def test_wrong_class_and_vendor() -> None:
    assert _refused(pm.sign(_m(device_class="esp8266"), KEY)) == Result.WRONG_CLASS
    assert _refused(pm.sign(_m(vendor="other.example"), KEY)) == Result.WRONG_CLASS


def test_downgrade_and_replay() -> None:
    assert _refused(pm.sign(_m(seq=4), KEY)) == Result.DOWNGRADE_REFUSED
    assert _refused(pm.sign(_m(seq=3), KEY)) == Result.DOWNGRADE_REFUSED
    assert _check(pm.sign(_m(seq=2**63 - 1), KEY))[const.M_SEQ] == 2**63 - 1
