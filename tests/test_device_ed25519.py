"""device/ed25519.py + sha512.py: RFC 8032 vectors, cryptography-made vectors, tampering, and
the tables on flash: their layout, and missing, damaged, foreign or unwritable ones."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

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
P = ed25519.P
ENTRY = 96
HEADER = 36


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("ed25519"))


def signed(seed: bytes, msg: bytes = b"m") -> tuple[bytes, bytes, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
    return public_bytes(key.public_key()), msg, key.sign(msg)


@pytest.mark.parametrize("pub,msg,sig", RFC8032)
def test_rfc8032_vectors(pub: str, msg: str, sig: str, tables: str) -> None:
    p, m, s = bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig)
    assert ed25519.verify(p, m, s, tables)
    assert not ed25519.verify(p, m + b"\x00", s, tables)


def test_sha512_matches_hashlib() -> None:
    rng = random.Random(1)
    for n in list(range(0, 260)) + [1000, 4096]:
        m = rng.randbytes(n)
        assert sha512.sha512(m) == hashlib.sha512(m).digest()


def test_random_vectors_and_flipped_bits(tables: str) -> None:
    rng = random.Random(2)
    for i in range(12):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        pub = public_bytes(key.public_key())
        msg = rng.randbytes(i * 23)
        sig = key.sign(msg)
        assert ed25519.verify(pub, msg, sig, tables)
        for blob in ("pub", "msg", "sig"):
            p, m, s = bytearray(pub), bytearray(msg), bytearray(sig)
            target = {"pub": p, "msg": m, "sig": s}[blob]
            if not target:
                continue
            bit = rng.randrange(len(target) * 8)
            target[bit // 8] ^= 1 << (bit % 8)
            assert not ed25519.verify(bytes(p), bytes(m), bytes(s), tables), (blob, bit)


def test_non_canonical_and_bad_inputs(tables: str) -> None:
    pub, _, sig = signed(bytes(range(32)))
    s = int.from_bytes(sig[32:], "little")
    malleable = sig[:32] + (s + ed25519.L).to_bytes(32, "little")  # S + L: same point, not canonical
    assert not ed25519.verify(pub, b"m", malleable, tables)
    assert not ed25519.verify(b"\xff" * 32, b"m", sig, tables)  # y >= p
    bad_y = (2).to_bytes(32, "little")  # y = 2 is not on the curve
    assert not ed25519.verify(bad_y, b"m", sig, tables)
    assert not Path(ed25519.table(bad_y, tables)).exists()  # no table for a key that is no point
    assert not ed25519.verify(pub[:31], b"m", sig, tables)
    assert not ed25519.verify(pub, b"m", sig[:63], tables)
    assert not ed25519.verify(os.urandom(32), b"m", os.urandom(64), tables)


def _point_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Affine Edwards addition, textbook (the reference the tables are checked against)."""
    (x1, y1), (x2, y2) = a, b
    t = ed25519.D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P,
            (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P)


def _times(n: int, a: tuple[int, int]) -> tuple[int, int]:
    r = (0, 1)
    while n:
        if n & 1:
            r = _point_add(r, a)
        a = _point_add(a, a)
        n >>= 1
    return r


def test_table_layout(tables: str) -> None:
    """Entry (i, j) is (j + 1) 32^i P as ((y + x)/2, (y - x)/2, dxy); header magic + key,
    trailer SHA-256 of the rest; 78,404 bytes."""
    pub, _, _ = signed(b"layout")
    ed25519.write_table(pub, tables)
    data = Path(ed25519.table(pub, tables)).read_bytes()
    assert len(data) == HEADER + ed25519.N * ed25519.H * ENTRY + 32 == 78404
    assert data[:HEADER] == ed25519.MAGIC + pub
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    point = ed25519._decode(pub)
    assert point is not None
    half = (P + 1) // 2
    for i in (0, 1, 50):
        for j in (0, 7, 15):
            x, y = _times((j + 1) << (5 * i), point)
            off = HEADER + ENTRY * (ed25519.H * i + j)
            got = [int.from_bytes(data[off + 32 * n:off + 32 * n + 32], "little") for n in range(3)]
            assert got == [(y + x) * half % P, (y - x) * half % P, ed25519.D * x * y % P], (i, j)


def _used_entry(sig: bytes) -> int:
    """Offset in B's table of the entry S's lowest digit reads (S's low 5 bits not 0)."""
    d = sig[32] & 31
    return HEADER + ENTRY * ((d if d < 16 else 32 - d) - 1)


def _signed_using_b_entry(tag: bytes) -> tuple[bytes, bytes, bytes]:
    for n in range(64):
        pub, msg, sig = signed(tag, b"m%d" % n)
        if sig[32] & 31:
            return pub, msg, sig
    raise AssertionError("no signature with a non-zero lowest digit")


def test_missing_tables_are_written_once(tmp_path: Path) -> None:
    pub, msg, sig = signed(b"missing")
    tables = str(tmp_path / "t")
    assert ed25519.verify(pub, msg, sig, tables)
    files = {p.name: p.stat().st_mtime_ns for p in Path(tables).iterdir()}
    assert sorted(files) == sorted(Path(ed25519.table(k, tables)).name for k in (pub, ed25519.BASE))
    assert ed25519.verify(pub, msg, sig, tables)
    assert not ed25519.verify(pub, msg + b"x", sig, tables)  # a wrong signature: digests checked
    assert {p.name: p.stat().st_mtime_ns for p in Path(tables).iterdir()} == files  # no rewrite


def test_damaged_table_never_accepts(tmp_path: Path) -> None:
    """A flipped byte in an entry the signature uses: with its digest made to match, the right
    signature is refused (and a wrong one too); with the digest stale, the table is written
    again and the right signature verifies."""
    pub, msg, sig = _signed_using_b_entry(b"damaged")
    tables = str(tmp_path)
    assert ed25519.verify(pub, msg, sig, tables)
    path = Path(ed25519.table(ed25519.BASE, tables))
    good = path.read_bytes()
    bad = bytearray(good)
    bad[_used_entry(sig) + 5] ^= 0x10
    bad[-32:] = hashlib.sha256(bad[:-32]).digest()
    path.write_bytes(bad)
    assert not ed25519.verify(pub, msg, sig, tables)
    assert not ed25519.verify(pub, msg + b"x", sig, tables)
    assert path.read_bytes() == bad  # consistent: nothing to repair, nothing accepted
    bad[-1] ^= 1  # the digest no longer matches: detected, rewritten
    path.write_bytes(bad)
    assert ed25519.verify(pub, msg, sig, tables)
    assert path.read_bytes() == good


def test_foreign_truncated_and_unwritable_tables(tmp_path: Path) -> None:
    pub, msg, sig = signed(b"mine")
    other, _, _ = signed(b"other")
    tables = str(tmp_path / "t")
    ed25519.write_table(other, tables)
    ed25519.write_table(pub, tables)
    mine = Path(ed25519.table(pub, tables))
    good = mine.read_bytes()
    mine.write_bytes(Path(ed25519.table(other, tables)).read_bytes())  # another key's table
    assert ed25519.verify(pub, msg, sig, tables)
    assert mine.read_bytes() == good
    mine.write_bytes(good[:40000])  # cut short
    assert ed25519.verify(pub, msg, sig, tables)
    assert mine.read_bytes() == good
    blocked = tmp_path / "file"
    blocked.write_bytes(b"")  # a file where the directory should be: no table can be written
    with pytest.raises(OSError):
        ed25519.verify(pub, msg, sig, str(blocked))


def test_agent_reports_an_unwritable_table_as_no_space(tmp_path: Path) -> None:
    """The agent's side: a table that cannot be written refuses the offer with no_space (2),
    never signature_invalid; with the tables where they belong, the same offer is taken."""
    from device import const, offer
    from device.agent import Agent
    from device.slots import FileSlots
    from device.state import Store
    from proto import manifest as pm

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"agent").digest())
    signed = pm.sign(pm.build(seq=2, vendor=pm.DEFAULT_VENDOR, device_class="c",
                              digest=bytes(32), size=10, uri="/f/00000000"), key)
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"")
    slots = FileSlots(str(tmp_path / "slots"))
    Path(slots.path("a")).write_bytes(b"x")
    slots.boot()
    cfg = {"id": "d", "class": "c", "trust": [public_bytes(key.public_key()).hex()]}
    a = Agent({**cfg, "tables": str(blocked)}, slots, Store(str(tmp_path / "s1.json")))
    offer.take(a, {const.C_MANIFEST: signed, const.C_JOB: 7})
    assert (a.s["job"], a.s["result"]) == (7, const.RES_NO_SPACE)
    a = Agent(cfg, slots, Store(str(tmp_path / "s2.json")))
    offer.take(a, {const.C_MANIFEST: signed, const.C_JOB: 8})
    assert (a.s["job"], a.s["state"]) == (8, const.ST_DOWNLOADING)
    assert len(list((tmp_path / ed25519.DIR).iterdir())) == 2  # next to the state file
