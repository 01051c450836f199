"""Heap of a windowed download under the real MicroPython unix port: where do early blocks go?

Two ways to take blocks that arrive out of order, both behind the same ``burst.Window``:

* ``slot`` (what the agent does): ``fetch.Fetch`` writes each block at its offset in the slot
  and hashes the image in order, reading early blocks back when the gap before them fills;
* ``ram``: a sink that holds early blocks in RAM until the gap fills, then writes in order.

Each run downloads a 64 KiB image in 1 KiB blocks from an in-process server whose answer to
the first request of every round is lost once (so every other block of the round arrives early,
the worst case for ``ram``; the window asks the lost one again at once), in ``micropython -X
heapsize=H`` with the device modules compiled by ``mpy-cross``. The figure is the peak live heap during the
download (``gc.collect()`` then ``gc.mem_alloc()`` after every datagram) minus the live heap
before it; "MemoryError" means the download does not fit that heap at all.

    python bench/window_heap.py                  # windows 8, 16, 32; heaps 64 KiB and 2 MiB
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROGRAM = r"""
import gc, sys, hashlib
sys.path.insert(0, %(repo)r)
from device import burst, coap, rtt
from device.fetch import Fetch
from device.slots import FileSlots

MODE = %(mode)r
W = %(window)d
SIZE = 64 * 1024
BS = 1024

def chunk(off, n):
    return bytes(((off + j) * 7 + (off + j) // 251) & 0xFF for j in range(n))

class RamSink:
    # holds blocks that came early; writes and hashes in order
    def __init__(self, slots):
        self.slots = slots
        self.held = {}
        self.offset = 0
        self.h = hashlib.sha256()
        slots.open(SIZE, 0)
    def put(self, off, data):
        if off != self.offset:
            self.held[off] = data
            return
        self._take(data)
        while self.offset in self.held:
            self._take(self.held.pop(self.offset))
    def _take(self, data):
        self.slots.write(data)
        self.h.update(data)
        self.offset += len(data)
    def advance(self, off):
        pass

slots = FileSlots(%(dir)r)
slots.boot()
digest = hashlib.sha256()
for off in range(0, SIZE, BS):
    digest.update(chunk(off, BS))
digest = digest.digest()
if MODE == "slot":
    sink = Fetch(slots, "/f/x", SIZE, digest, BS)
    sink.start(0)
else:
    sink = RamSink(slots)
r = rtt.Rtt(100)
w = burst.Window("f/x", SIZE, 6, sink, max_window=W, init_window=W, step=1 << 30)
n = [0]
def mid():
    n[0] += 1
    return n[0]
gc.collect()
base = gc.mem_alloc()
peak = base
w.start(0, r, mid)
now = 0
lost = set()
for _ in range(1000):
    if w.complete:
        break
    sent, w.outgoing = w.outgoing, []
    now += 10
    first = True
    for d in sent:
        m = coap.decode(d)
        num = coap.parse_block(coap.to_uint(m.opt(coap.BLOCK2)))[0]
        if first and num not in lost:
            lost.add(num)
            first = False
            continue
        first = False
        off = num * BS
        ans = coap.encode(coap.NON, 0x45, m.mid, m.token,
                          [(coap.ETAG, b"12345678"),
                           (coap.BLOCK2, coap.uint(coap.block_value(num, off + BS < SIZE, 6)))],
                          chunk(off, min(BS, SIZE - off)))
        m = d = None
        w.on_datagram(ans, now)
        ans = None
        gc.collect()
        a = gc.mem_alloc()
        if a > peak:
            peak = a
    if not sent:
        now = w.deadline
        w.on_timeout(now)
ok = w.complete and (sink.verified() if MODE == "slot" else sink.h.digest() == digest)
print("RESULT", base, peak - base, ok)
"""


def compiled(mpy_cross: str, out: Path) -> Path:
    """device/*.py compiled with mpy-cross, as a board holds them (bytecode not in the heap
    while compiling, no source text)."""
    (out / "device").mkdir(parents=True)
    for f in sorted((REPO / "device").glob("*.py")):
        subprocess.run([mpy_cross, "-o", str(out / "device" / (f.stem + ".mpy")), str(f)],
                       check=True)
    return out


def run(mpy: str, lib: Path, mode: str, window: int, heap: str) -> str:
    with tempfile.TemporaryDirectory(prefix="fota-heap-") as tmp:
        prog = Path(tmp) / "prog.py"
        prog.write_text(PROGRAM % {"repo": str(lib), "mode": mode, "window": window,
                                   "dir": str(Path(tmp) / "slots")})
        p = subprocess.run([mpy, "-X", f"heapsize={heap}", str(prog)], capture_output=True,
                           text=True, timeout=600)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT"):
            _, base, extra, ok = line.split()
            if ok != "True":
                return "wrong bytes"
            return f"{int(extra)}"
    if "MemoryError" in p.stderr + p.stdout:
        return "MemoryError"
    return "failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, action="append", help="windows (default 8, 16, 32)")
    p.add_argument("--heap", action="append", help="heap sizes (default 64K, 2M)")
    p.add_argument("--micropython", default=shutil.which("micropython")
                   or str(REPO / ".venv" / "bin" / "micropython"))
    p.add_argument("--mpy-cross", default=shutil.which("mpy-cross")
                   or str(REPO / ".venv" / "bin" / "mpy-cross"))
    args = p.parse_args()
    windows = args.window or [8, 16, 32]
    heaps = args.heap or ["64K", "2M"]
    print("peak live heap during the download above the heap before it, bytes "
          f"(MicroPython unix port, {args.micropython})\n")
    print("| early blocks go to | window | " + " | ".join(f"heap {h}" for h in heaps) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in heaps) + " |")
    with tempfile.TemporaryDirectory(prefix="fota-mpy-") as tmp:
        lib = compiled(args.mpy_cross, Path(tmp))
        for mode in ("slot", "ram"):
            for w in windows:
                cells = [run(args.micropython, lib, mode, w, h) for h in heaps]
                print(f"| {'the slot, read back' if mode == 'slot' else 'RAM'} | {w} | "
                      + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
