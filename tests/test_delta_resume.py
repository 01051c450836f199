"""Power cuts at seeded random points of a delta apply: the device still ends on the new image.

The real gateway and the real ``cc``; the CPython agent (it announces CAPS deflate + delta)
runs image seq 1 from its slot file and takes seq 2, a patch release the gateway sends as a
delta. The power goes at seeded random points of the image as written: the slot write that
would cross the point raises (a power cut runs no handler), the slot loses every write not
yet ``sync``-ed, the agent object and its socket are dropped, and a new Agent starts on the
same files, as a rebooted board would.

Bound on what a resume fetches again, from the restart points (device/pipe.py): a delta is
restartable only at a deflate segment end, each covering SEGMENT_OUT_DELTA (256 KiB) of image
(proto/packing.py, so every one is PERSIST_EVERY past the last and is persisted). A segment end
is seen once RESERVE more bytes have arrived (device/inflate.py) and persisted after its block;
the resume starts at the block holding it. So per cut: the longest segment of the transfer +
RESERVE + 2 blocks, stop-and-wait. Windowed (the default), the blocks that came early and
waited in the park file (device/fetch.py) are lost with the power too: up to a window's span
more.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from device import agent as agent_mod
from device import coap
from device.inflate import RESERVE
from powercut import LossySlots, PowerOns, exchange, settled
from proto import packing
from sim import hostdeflate
from sim.aio import AioLink
from test_agent_e2e import CLASS, Ops
from test_delta_e2e import firmware_like, release

IMAGE_SIZE = 1024 * 1024  # four restart points of 256 KiB of image
BLOCK = 1024
CUTS = 6


class CutSlots(LossySlots):
    """LossySlots whose power goes when a write would cross the next offset of ``cuts``."""

    def __init__(self, root: str, cuts: list[int]) -> None:
        super().__init__(root)
        self.cuts = cuts

    def power_fails(self, offset: int, n: int) -> bool:
        if self.cuts and offset + n > self.cuts[0]:
            self.cuts.pop(0)
            return True
        return False


def segments(sent: bytes) -> list[tuple[int, int]]:
    """(transfer bytes, op-stream bytes) of each deflate segment of ``sent``."""
    out = []
    rest = sent
    while rest:
        d = zlib.decompressobj(-packing.WBITS)
        n = len(d.decompress(rest))
        assert d.eof, "the transfer ends inside a segment"
        out.append((len(rest) - len(d.unused_data), n))
        rest = d.unused_data
    return out


@pytest.mark.parametrize("transfer", ["stop-and-wait", "window"])
async def test_power_cuts_at_random_points_of_a_delta_apply(gateway, tmp_path: Path,
                                                            transfer: str) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    v1 = firmware_like(IMAGE_SIZE)
    v2 = release(v1, 5, edits=3000)  # a delta of ~21 blocks, ~5 to each segment
    await ops.image(v1, 1)
    image = await ops.image(v2, 2)  # builds and signs the delta from seq 1
    root = tmp_path / "dev"
    root.mkdir()
    slots_dir = root / "slots"
    slots_dir.mkdir()
    (slots_dir / "a.bin").write_bytes(v1)  # the running slot holds seq 1: the delta's base
    config = {"id": f"cut-{transfer}", "class": CLASS, "trust": [trust], "version": 1,
              "block_size": BLOCK, "wake_s": 0.05, "deflate": hostdeflate, "transfer": transfer}
    rng = random.Random(20261129)
    cuts = sorted(rng.sample(range(1, len(v2)), CUTS))  # offsets in the image as written
    pending = list(cuts)
    seen: set[int] = set()  # transfer offsets of the blocks received so far
    sent = bytearray()
    windows = 0
    again: Counter[int] = Counter()  # boot number -> bytes it fetched again
    p = PowerOns(config, root, gateway.device_port, slots=lambda d: CutSlots(d, pending))

    def got(at: int, data: bytes) -> None:
        again[p.boots] += len(data) if at in seen else 0
        seen.add(at)
        sent[at:at + len(data)] = data

    async def tap(link: AioLink, req: Any) -> Any:
        nonlocal windows
        if isinstance(req, coap.Request):
            resp = await link.request(req)
            if resp is not None and resp.block2 is not None:
                got(resp.block2[0] * BLOCK, bytes(resp.payload))
            return resp
        windows += 1  # a window: its blocks reach the Fetch by put(offset, payload)
        put = req.sink.put
        req.sink.put = lambda at, data: got(at, bytes(data)) or put(at, data)
        resp = await exchange(link, req)
        req.sink.put = put
        return resp

    await p.run(lambda a: True)  # registered by its first report (with its CAPS): upgrade now
    campaign = await ops.json("upgrade", image["id"], "--all")
    agent = await p.run(settled(2), exchange=tap)
    refetched = [again[b + 1] for b in p.cut_boots]  # in the boot after each cut
    assert agent.seq == 2, agent.s
    assert p.cuts == CUTS, (p.cuts, cuts)
    assert Path(p.slots.path(p.slots.running())).read_bytes() == v2
    camp = await ops.json("status", str(campaign["id"]))
    (job,) = camp["jobs"]
    assert (job["state"], job["result"]) == ("succeeded", "success"), job
    assert (job["sent"], job["size"]) == ("delta", len(sent)), (job, len(sent))
    assert len(sent) < 0.05 * len(v2), len(sent)
    segs = segments(bytes(sent))
    # every segment was ended by the image it covers, not by SEGMENT_IN: each end is a
    # restart point SEGMENT_OUT_DELTA (>= PERSIST_EVERY) past the last, so each is persisted
    assert len(segs) >= 3, segs
    assert all(n < packing.SEGMENT_IN for _, n in segs), segs
    assert agent_mod.PERSIST_EVERY <= packing.SEGMENT_OUT_DELTA
    bound = max(t for t, _ in segs) + RESERVE + 2 * BLOCK
    print(f"\n{CUTS} power cuts at image offsets {cuts}, {p.boots} boots: a delta of {len(sent)} "
          f"bytes in {len(segs)} segments for a {len(v2)} byte image; fetched again per cut "
          f"{refetched} (bound {bound})")
    assert len(refetched) == CUTS
    assert (windows > 0) == (transfer == "window")
    assert bound < len(sent) // 2  # restarting late cuts from the start would break it
    # the window's: what waited in the park file, at most a span more (a decoded download's
    # window: 16 blocks, its span 4 windows)
    bound += 16 * 4 * BLOCK * (transfer == "window")
    assert all(0 < n <= bound for n in refetched), (refetched, bound)
