"""The wire contract on CPython: manifest sign/verify round trips and every way it must fail."""

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import codes, keys, manifest, uris


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % seed).digest())


KEY = _key(1)
PUB = manifest.public_bytes(KEY.public_key())
DIGEST = hashlib.sha256(b"image").digest()


def _signed(**over) -> bytes:
    args = dict(seq=7, vendor="acme.example", device_class="esp32-s3", digest=DIGEST, size=5,
                uri=uris.image_path(DIGEST))
    args.update(over)
    return manifest.sign(manifest.build(**args), KEY)


def test_round_trip_fields():
    m = manifest.verify(_signed(), [PUB])
    assert m[keys.ManifestKey.SEQ] == 7
    assert m[keys.ManifestKey.DIGEST] == DIGEST
    assert m[keys.ManifestKey.SIZE] == 5
    assert m[keys.ManifestKey.URI] == "/f/" + DIGEST.hex()[:8]
    assert m[keys.ManifestKey.VENDOR] == manifest.vendor_id("acme.example")
    assert m[keys.ManifestKey.CLASS] == manifest.class_id("acme.example", "esp32-s3")


def test_encoding_is_deterministic_and_small():
    a, b = _signed(), _signed()
    assert a == b  # Ed25519 is deterministic and the map is canonically ordered
    assert len(a) < 256
    payload = manifest.unwrap(a)[2]
    assert list(cbor2.loads(payload).keys()) == sorted(cbor2.loads(payload).keys())


def test_uuid5_ids_follow_suit():
    import uuid

    v = manifest.vendor_id("acme.example")
    assert uuid.UUID(bytes=v).version == 5
    assert manifest.class_id("acme.example", "a") != manifest.class_id("acme.example", "b")
    assert manifest.class_id("acme.example", "a") != manifest.class_id("other.example", "a")


def test_wrong_key_refused():
    with pytest.raises(manifest.ManifestError, match="signature"):
        manifest.verify(_signed(), [manifest.public_bytes(_key(2).public_key())])


def test_second_trusted_key_accepted():
    other = manifest.public_bytes(_key(3).public_key())
    assert manifest.verify(_signed(), [other, PUB])[keys.ManifestKey.SEQ] == 7


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_bit_refused(data):
    signed = _signed()
    bit = data.draw(st.integers(0, len(signed) * 8 - 1))
    bad = bytearray(signed)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(manifest.ManifestError):
        manifest.verify(bytes(bad), [PUB])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_manifest_error(blob):
    with pytest.raises(manifest.ManifestError):
        manifest.verify(blob, [PUB])


def test_oversized_refused():
    with pytest.raises(manifest.ManifestError, match="too large"):
        manifest.parse(b"\x00" * (manifest.MAX_MANIFEST + 1))


def test_build_validates():
    with pytest.raises(manifest.ManifestError):
        manifest.build(seq=-1, vendor="v", device_class="c", digest=DIGEST, size=1, uri="/f/x")
    with pytest.raises(manifest.ManifestError):
        manifest.build(seq=1, vendor="v", device_class="c", digest=b"short", size=1, uri="/f/x")


def test_codes_keep_lwm2m_numbers():
    assert [s.value for s in codes.State] == [0, 1, 2, 3]
    assert codes.Result.SUCCESS == 1 and codes.Result.INTEGRITY_FAILURE == 5
    assert codes.Result.CANCELLED == 10 and codes.Result.DEFERRED == 11
    assert codes.result_name(99) == "result_99"
    assert codes.result_name(21) == "signature_invalid"
