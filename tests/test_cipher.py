"""device/cipher.py and device/keywrap.py against `cryptography` (AES-CTR, AES Key Wrap), on CPython and on the real
MicroPython unix port (its own cryptolib), with the RFC 3394 vector and a counter that wraps."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from device import cipher, keywrap
from sim.hostaes import aes as host_aes

ROOT = Path(__file__).resolve().parent.parent
from upy import MICROPYTHON  # noqa: E402  (the real unix port, tests/upy.py)

# RFC 3394 section 4.6: 256 bits of key data with a 256-bit KEK
RFC_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
RFC_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
RFC_WRAPPED = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326"
                            "CBC7F0E71A99F43BFB988B9B7A02DD21")


def ctr_reference(key: bytes, iv: bytes, data: bytes, offset: int) -> bytes:
    """cryptography's CTR from the start, sliced at offset (it has no seek)."""
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(bytes(offset) + data)[offset:]


def vectors(seed: int = 16) -> list[dict[str, str | int]]:
    rnd = random.Random(seed)
    out = []
    ivs = [rnd.randbytes(16) for _ in range(4)] + [b"\xff" * 15 + b"\xf0",  # wraps in a chunk
                                                    b"\xff" * 16]
    for iv in ivs:
        key = rnd.randbytes(32)
        for offset, n in ((0, 1024), (1024 * 37, 1024), (16 * 5, 300), (7, 45), (1008, 1)):
            data = rnd.randbytes(n)
            out.append({"key": key.hex(), "iv": iv.hex(), "offset": offset, "data": data.hex(),
                        "want": ctr_reference(key, iv, data, offset).hex()})
    return out


def wraps(seed: int = 3394) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    out = [{"kek": RFC_KEK.hex(), "key": RFC_KEY.hex(), "wrapped": RFC_WRAPPED.hex()}]
    for _ in range(4):
        kek, key = rnd.randbytes(32), rnd.randbytes(32)
        out.append({"kek": kek.hex(), "key": key.hex(), "wrapped": aes_key_wrap(kek, key).hex()})
    return out


def test_rfc3394_vector_is_what_cryptography_makes() -> None:
    assert aes_key_wrap(RFC_KEK, RFC_KEY) == RFC_WRAPPED


def test_ctr_agrees_with_cryptography_on_cpython() -> None:
    for v in vectors():
        c = cipher.ctr(host_aes, bytes.fromhex(v["key"]), bytes.fromhex(v["iv"]))
        data = bytes.fromhex(v["data"])
        assert bytes(c(v["offset"], data, bytearray(len(data)))).hex() == v["want"]


def test_ctr_resumes_at_any_block_with_nothing_but_the_offset() -> None:
    key, iv, image = os.urandom(32), os.urandom(16), os.urandom(5000)
    whole = ctr_reference(key, iv, image, 0)
    parts = b""
    for off in range(0, len(image), 1024):  # a fresh object per block: a power cut before each
        parts += bytes(cipher.ctr(host_aes, key, iv)(off, whole[off:off + 1024], bytearray(1024)))
    assert parts == image


def test_unwrap_agrees_with_cryptography_and_refuses_another_key() -> None:
    for w in wraps():
        got = keywrap.unwrap(host_aes, bytes.fromhex(w["kek"]), bytes.fromhex(w["wrapped"]))
        assert got.hex() == w["key"]
    with pytest.raises(ValueError):
        keywrap.unwrap(host_aes, bytes(32), RFC_WRAPPED)
    with pytest.raises(ValueError):
        keywrap.unwrap(host_aes, RFC_KEK, RFC_WRAPPED[:-1])


UPY_CHECK = """
import json, sys
sys.path.insert(0, %r)
from cryptolib import aes
from device import cipher, keywrap
from binascii import hexlify, unhexlify
v = json.loads(open(%r).read())
bad = 0
for t in v["ctr"]:
    c = cipher.ctr(aes, unhexlify(t["key"]), unhexlify(t["iv"]))
    d = unhexlify(t["data"])
    if hexlify(bytes(c(t["offset"], d, bytearray(len(d))))).decode() != t["want"]:
        bad += 1
for w in v["kw"]:
    if hexlify(keywrap.unwrap(aes, unhexlify(w["kek"]), unhexlify(w["wrapped"]))).decode() != w["key"]:
        bad += 1
try:
    keywrap.unwrap(aes, bytes(32), unhexlify(v["kw"][0]["wrapped"]))
    bad += 1
except ValueError:
    pass
print("checked", len(v["ctr"]) + len(v["kw"]) + 1, "bad", bad)
"""


def test_device_code_agrees_on_the_real_micropython_unix_port(tmp_path: Path) -> None:
    data = tmp_path / "v.json"
    data.write_text(json.dumps({"ctr": vectors(), "kw": wraps()}))
    script = tmp_path / "check.py"
    script.write_text(UPY_CHECK % (str(ROOT), str(data)))
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=256k", str(script)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["checked", str(len(vectors()) + len(wraps()) + 1), "bad", "0"]
