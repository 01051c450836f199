"""device/ed25519.py on the real MicroPython unix port (``upy.run_upy``): it agrees with
`cryptography` on random signatures with the tables provisioned by the host, writes a missing
table byte for byte as the host does, never accepts through a damaged one, and stays within the
issue 10 budget: <= 256 KB allocated and <= 12 KiB of heap above its imports per verify."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from upy import run_upy

from cc.provision import DEVICE, compile_file, key_table, write_tables
from device import ed25519
from proto import manifest as pm


def _signed(seed: bytes, msg: bytes) -> tuple[bytes, bytes, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
    return pm.public_bytes(key.public_key()), msg, key.sign(msg)


def _call(pub: bytes, msg: bytes, sig: bytes, tables: Path) -> str:
    return (f"ed25519.verify(bytes.fromhex('{pub.hex()}'), bytes.fromhex('{msg.hex()}'), "
            f"bytes.fromhex('{sig.hex()}'), '{tables}')")


def test_ed25519_agrees_with_cryptography_under_micropython(tmp_path: Path) -> None:
    """Random keys and messages verify (digits of both signs, both tables); one flipped bit of
    each part does not (a flipped key is another point: the device writes its table itself)."""
    rng = random.Random(7)
    cases = []
    for i in range(10):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        pub, msg = pm.public_bytes(key.public_key()), rng.randbytes(i * 19)
        sig = key.sign(msg)
        cases.append((pub, msg, sig, True))
        part = i % 3
        blobs = [bytearray(pub), bytearray(msg or b"x"), bytearray(sig)]
        bit = rng.randrange(len(blobs[part]) * 8)
        blobs[part][bit // 8] ^= 1 << (bit % 8)
        cases.append((bytes(blobs[0]), bytes(blobs[1]), bytes(blobs[2]), False))
    write_tables(tmp_path, [pub for pub, *_, ok in cases if ok])
    code = "from device import ed25519\n" + "".join(
        f"print({_call(p, m, s, tmp_path)})\n" for p, m, s, _ in cases)
    assert run_upy(code, timeout=120).split() == [str(ok) for *_, ok in cases]


def test_tables_missing_damaged_or_foreign_under_micropython(tmp_path: Path) -> None:
    """The port writes a missing table exactly as provisioning does; a flipped byte with a
    matching digest makes the right signature fail (never a wrong one pass); with a stale
    digest, or another key's table under this key's name, the table is written again."""
    for n in range(64):  # a signature whose S reads B's table at position 0
        pub, msg, sig = _signed(b"upy tables", b"m%d" % n)
        if sig[32] & 31:
            break
    d = sig[32] & 31
    used = 36 + 96 * ((d if d < 16 else 32 - d) - 1)
    b_name, b_good = key_table(ed25519.BASE)
    a_name, a_good = key_table(pub)
    t = tmp_path / "t"

    def verify(*wrong: bool) -> list[str]:
        code = "from device import ed25519\n" + "".join(
            f"print({_call(pub, msg + b'x' * w, sig, t)})\n" for w in wrong)
        return run_upy(code).split()

    assert verify(False) == ["True"]  # no tables at all: both written on the port
    assert (t / b_name).read_bytes() == b_good and (t / a_name).read_bytes() == a_good
    bad = bytearray(b_good)
    bad[used + 3] ^= 0x40
    bad[-32:] = hashlib.sha256(bad[:-32]).digest()
    (t / b_name).write_bytes(bad)
    assert verify(False, True) == ["False", "False"]
    bad[-1] ^= 1  # the digest no longer matches
    (t / b_name).write_bytes(bad)
    (t / a_name).write_bytes(key_table(_signed(b"another", b"")[0])[1])
    assert verify(False) == ["True"]
    assert (t / b_name).read_bytes() == b_good and (t / a_name).read_bytes() == a_good


def test_verify_budget_under_micropython(tmp_path: Path) -> None:
    """Issue 10: one verify allocates <= 256 KB in all (collector off, as bench/footprint.py
    measures) and runs in 12 KiB of heap above its imports; so does one that writes both its
    tables first (a key trusted after provisioning must not need more RAM than the rest)."""
    pub, msg, sig = _signed(b"budget", bytes(range(120)))
    write_tables(tmp_path, [pub])
    for name in ("__init__.py", "sha512.py", "ed25519.py"):  # bytecode, as on a board
        compile_file(DEVICE / name, tmp_path / "fota" / name.replace(".py", ".mpy"), [])
    code = f"""
import gc
from fota import ed25519
gc.collect()
print(gc.mem_alloc())
if {{mode}}:
    gc.disable()
    a = gc.mem_alloc()
    print({_call(pub, msg, sig, tmp_path)}, gc.mem_alloc() - a)
else:
    print({_call(pub, msg, sig, tmp_path)})
"""
    base, ok, alloc = run_upy(code.format(mode=1), heap="1m", libs=(tmp_path,)).split()
    assert ok == "True" and int(alloc) <= 256_000, alloc
    out = run_upy(code.format(mode=0), heap=str(int(base) + 12 * 1024), libs=(tmp_path,)).split()
    assert out[1] == "True", out
    for table in tmp_path.glob("????????????????"):
        table.unlink()
    out = run_upy(code.format(mode=0), heap=str(int(base) + 12 * 1024), libs=(tmp_path,)).split()
    assert out[1] == "True" and len(list(tmp_path.glob("????????????????"))) == 2, out
