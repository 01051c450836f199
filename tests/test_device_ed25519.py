"""device/ed25519.py + sha512.py: RFC 8032 vectors, cryptography-made vectors, tampering."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import ed25519, sha512
from proto.manifest import public_bytes

# RFC 8032 section 7.1, TEST 1, 2, 3: (public, message, signature)
RFC8032 = [
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]


@pytest.mark.parametrize("pub,msg,sig", RFC8032)
def test_rfc8032_vectors(pub: str, msg: str, sig: str) -> None:
    p, m, s = bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig)
    assert ed25519.verify(p, m, s)
    assert not ed25519.verify(p, m + b"\x00", s)


def test_sha512_matches_hashlib() -> None:
    rng = random.Random(1)
    for n in list(range(0, 260)) + [1000, 4096]:
        m = rng.randbytes(n)
        assert sha512.sha512(m) == hashlib.sha512(m).digest()


def test_random_vectors_and_flipped_bits() -> None:
    rng = random.Random(2)
    for i in range(12):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        pub = public_bytes(key.public_key())
        msg = rng.randbytes(i * 23)
        sig = key.sign(msg)
        assert ed25519.verify(pub, msg, sig)
        for blob in ("pub", "msg", "sig"):
            p, m, s = bytearray(pub), bytearray(msg), bytearray(sig)
            target = {"pub": p, "msg": m, "sig": s}[blob]
            if not target:
                continue
            bit = rng.randrange(len(target) * 8)
            target[bit // 8] ^= 1 << (bit % 8)
            assert not ed25519.verify(bytes(p), bytes(m), bytes(s)), (blob, bit)


def test_non_canonical_and_bad_inputs() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pub = public_bytes(key.public_key())
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little")
    malleable = sig[:32] + (s + ed25519.L).to_bytes(32, "little")  # S + L: same point, not canonical
    assert not ed25519.verify(pub, b"m", malleable)
    assert not ed25519.verify(b"\xff" * 32, b"m", sig)  # y >= p
    bad_y = (2).to_bytes(32, "little")  # y = 2 is not on the curve
    assert not ed25519.verify(bad_y, b"m", sig)
    assert not ed25519.verify(pub[:31], b"m", sig)
    assert not ed25519.verify(pub, b"m", sig[:63])
    assert not ed25519.verify(os.urandom(32), b"m", os.urandom(64))
