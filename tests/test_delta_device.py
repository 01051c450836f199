"""The device's decoding pipeline (device/pipe.py, inflate.py, patch.py) on its own: round trips
on random and real pairs, any bytes never crash it nor write outside the slot, power cuts at
random points, and its heap under the real MicroPython unix port."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.inflate import Inflate, InflateError
from device.patch import Patch, PatchError
from device.pipe import DEFLATE, Pipe
from device.slots import FileSlots
from gateway import deltas
from proto import packing
from sim import hostdeflate
from upy import run_upy

LIBCOAP = Path("/usr/lib/x86_64-linux-gnu")
REAL_PAIRS = [  # real binaries nobody here wrote (Debian's libcoap): related, not identical
    (LIBCOAP / "libcoap-3-notls.so.3.0.0", LIBCOAP / "libcoap-3-openssl.so.3.0.0"),
    (Path("/usr/bin/coap-client-notls"), Path("/usr/bin/coap-server-notls")),
]


def edited(base: bytes, seed: int, edits: int = 20) -> bytes:
    rnd = random.Random(seed)
    out = bytearray(base)
    for _ in range(edits):
        i = rnd.randrange(max(1, len(out) - 8))
        kind = rnd.randrange(3)
        if kind == 0:
            out[i:i + 4] = rnd.randbytes(4)
        elif kind == 1:
            out[i:i] = rnd.randbytes(rnd.randrange(1, 200))
        else:
            del out[i:i + rnd.randrange(1, 200)]
    return bytes(out)


def slots_with(tmp: Path, running: bytes) -> FileSlots:
    tmp.mkdir(parents=True, exist_ok=True)
    s = FileSlots(str(tmp / "slots"))
    Path(s.path(s.running())).write_bytes(running)
    return s


def apply(slots: FileSlots, sent: bytes, target: bytes, delta: bool = True,
          block: int = 1024) -> bool:
    p = Pipe(slots, len(target), hashlib.sha256(target).digest(), DEFLATE, delta,
             lib=hostdeflate)
    p.start(block)
    for i in range(0, len(sent), block):
        p.write(sent[i:i + block])
    return p.verified()


@pytest.mark.parametrize("seed", range(4))
def test_random_pairs_round_trip(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    base = rnd.randbytes(rnd.randrange(1, 60_000))
    target = edited(base, seed) if seed % 2 == 0 else rnd.randbytes(rnd.randrange(1, 9_000))
    s = slots_with(tmp_path, base)
    assert apply(s, deltas.build(base, target), target)
    assert Path(s.path(s.inactive())).read_bytes() == target
    full = packing.compress_image(target)
    assert apply(slots_with(tmp_path / "full", base), full, target, delta=False)


@pytest.mark.parametrize("pair", REAL_PAIRS, ids=lambda p: p[0].name)
def test_real_pairs_round_trip(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    base, target = pair[0].read_bytes(), pair[1].read_bytes()
    sent = deltas.build(base, target)
    assert apply(slots_with(tmp_path, base), sent, target)
    assert len(sent) < len(packing.compress_image(target))


def test_a_delta_onto_another_base_fails_the_digest_check(tmp_path: Path) -> None:
    base = random.Random(1).randbytes(20_000)
    target = edited(base, 1)
    wrong = bytearray(base)
    wrong[5000] ^= 0xFF  # one flipped bit in the running slot: the signed digest catches it
    assert not apply(slots_with(tmp_path, bytes(wrong)), deltas.build(base, target), target)


class Bounded:
    """An output and a base that fail the test on any access outside their bounds."""

    def __init__(self, base_size: int, size: int) -> None:
        self.base_size, self.size, self.n = base_size, size, 0

    def write(self, mv: memoryview) -> None:
        self.n += len(mv)
        assert self.n <= self.size

    def read(self, offset: int, buf: memoryview) -> int:
        assert 0 <= offset and offset + len(buf) <= self.base_size
        return len(buf)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 5000), st.integers(0, 5000), st.booleans())
def test_any_patch_bytes_give_patch_errors_only_and_stay_in_bounds(data: bytes, base: int,
                                                                   size: int, header: bool) -> None:
    if header:  # get past the header, so the ops themselves are what is random
        data = bytes([packing.MAGIC]) + packing.uvarint(size) + data
    io = Bounded(base, size)
    p = Patch(io, io.read, base, size)
    try:
        for i in range(0, len(data), 7):
            p.write(data[i:i + 7])
    except PatchError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_any_transfer_bytes_give_inflate_errors_only(data: bytes) -> None:
    out = Bounded(0, 1 << 30)
    d = Inflate(out, lib=hostdeflate)
    try:
        d.write(data)
        d.finish()
    except InflateError:
        pass


# -- under the real MicroPython unix port ------------------------------------------------------

DEVICE_RUN = r"""
import gc, json, binascii
from device.slots import FileSlots
from device.pipe import Pipe
import device.patch, device.inflate
cfg = json.loads(open(ROOT + '/cfg.json').read())
digest = binascii.unhexlify(cfg['digest'])
blk = bytearray(1024)

def run(cp, cut):
    # feed from the checkpoint cp; stop after `cut` blocks (a power cut); return (cp, peak, ok)
    s = FileSlots(ROOT + '/slots')
    f = open(ROOT + '/sent', 'rb')
    gc.collect()
    m0 = gc.mem_alloc()
    peak = 0
    p = Pipe(s, cfg['size'], digest, 1, cfg['delta'], cp)
    off = p.start(1024)
    f.seek(off)
    n_blocks = 0
    while True:
        n = f.readinto(blk)
        if not n:
            break
        p.write(memoryview(blk)[:n])
        c = p.checkpoint()
        if c is not None:
            s.sync()
            cp = json.loads(json.dumps(c))  # what the agent persists
        n_blocks += 1
        gc.collect()
        peak = max(peak, gc.mem_alloc() - m0)
        if n_blocks == cut:
            s.close()
            return cp, peak, None
    return cp, peak, p.verified()

cp, peak, ok = None, 0, None
starts = []
peaks = []
for cut in cfg['cuts'] + [-1]:
    starts.append(cp['o'] if cp else 0)
    cp, pk, ok = run(cp, cut)
    peak = max(peak, pk)
    peaks.append(pk)
print(json.dumps({'ok': ok, 'peak': peak, 'starts': starts, 'peaks': peaks}))
"""


def device_apply(tmp: Path, base: bytes, sent: bytes, target: bytes, delta: bool,
                 cuts: list[int]) -> dict:
    slots = tmp / "slots"
    slots.mkdir(parents=True)
    (slots / "a.bin").write_bytes(base)
    (tmp / "sent").write_bytes(sent)
    (tmp / "cfg.json").write_text(json.dumps({
        "digest": hashlib.sha256(target).hexdigest(), "size": len(target), "delta": delta,
        "cuts": cuts}))
    out = run_upy(f"ROOT = {str(tmp)!r}\n" + DEVICE_RUN, heap="96k", timeout=60)
    got = json.loads(out.strip().splitlines()[-1])
    assert (slots / "b.bin").read_bytes() == target
    return got


def test_micropython_applies_a_real_delta_in_8_kib_through_power_cuts(tmp_path: Path) -> None:
    base, target = (p.read_bytes() for p in REAL_PAIRS[0])
    base, target = base[:200_000], target[:200_000]
    # restart points every 16 KiB of image (the gateway makes them every 256 KiB: same format)
    pieces = list(packing.encode_ops(len(target), deltas.detools_ops(base, target)))
    sent = packing.deflate_segments(pieces, 16384)
    blocks = -(-len(sent) // 1024)
    cuts = [random.Random(7).randrange(1, blocks // 3) for _ in range(3)]
    got = device_apply(tmp_path, base, sent, target, True, cuts)
    assert got["ok"] is True
    assert got["peak"] <= 8192, got  # bytes of live heap beyond the loaded code, at 1 KiB blocks
    starts = got["starts"]
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] > 0, got  # resumed


def test_micropython_decompresses_a_full_image_through_power_cuts(tmp_path: Path) -> None:
    target = REAL_PAIRS[0][1].read_bytes()
    sent = packing.compress_image(target)
    blocks = -(-len(sent) // 1024)
    got = device_apply(tmp_path, b"", sent, target, False, [3, blocks // 3, blocks // 3])
    assert got["ok"] is True and got["peak"] <= 8192, got
    assert got["starts"][1:] == sorted(got["starts"][1:]) and got["starts"][-1] > 0, got
