"""Power cuts at 20 random points of a transfer: the device always ends on the new image.

The slot storage loses every write not yet ``sync``-ed (what a power cut does to a flash
write cache); the agent object and its socket are dropped at the cut and a new one starts on
the same files, as a rebooted board would. Every block received is counted: a resumed download
may re-fetch at most 16 KiB (the persistence interval) plus the block in flight, per cut.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from device import agent as agent_mod
from device.agent import Agent
from device.slots import FileSlots
from device.state import Store
from sim.aio import AioLink
from test_agent_e2e import CLASS, Ops, image_bytes

IMAGE_SIZE = 256 * 1024
BLOCK = 1024
CUTS = 20


class PowerCut(Exception):
    pass


class LossySlots(FileSlots):
    """FileSlots whose writes reach the file only at ``sync``; ``cut()`` drops the rest."""

    def open(self, size: int, offset: int = 0) -> None:
        super().open(size, offset)
        self._unsynced: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._unsynced.append(bytes(data))

    def sync(self) -> None:
        if self._f is not None and self._unsynced:
            self._f.write(b"".join(self._unsynced))
            self._unsynced.clear()
        super().sync()

    def cut(self) -> None:
        if self._f is not None:
            self._unsynced.clear()
            self._f.close()
            self._f = None


async def test_power_cuts_at_random_points_resume_and_refetch_little(gateway,
                                                                      tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    data = image_bytes(IMAGE_SIZE, 7)
    image = await ops.image(data, 2)
    root = tmp_path / "dev"
    root.mkdir()
    config = {"id": "cut-me", "class": CLASS, "trust": [trust], "version": 1,
              "block_size": BLOCK, "wake_s": 0.05,
              "transfer": "stop-and-wait"}  # windowed: tests/test_window_e2e.py
    rng = random.Random(20261128)
    # exchange numbers at which the power goes: all inside the transfer (~256 blocks + reports)
    cuts = sorted(rng.sample(range(2, IMAGE_SIZE // BLOCK + 4), CUTS))
    n = fetched = cut_count = boots = 0
    campaign = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        slots = LossySlots(str(root / "slots"))
        slots.boot()
        boots += 1
        agent = Agent(config, slots, Store(str(root / "state.json")))
        link = await AioLink.open("127.0.0.1", gateway.device_port, ack_timeout=1.0)
        try:
            wake = agent.wake()
            try:
                req = next(wake)
                while True:
                    if campaign is not None and cuts and n >= cuts[0]:
                        cuts.pop(0)
                        raise PowerCut
                    resp = await link.request(req)
                    n += 1 if campaign is not None else 0
                    if resp is not None and resp.block2 is not None:
                        fetched += len(resp.payload)
                    req = wake.send(resp)
            except StopIteration as e:
                action, _ = e.value
            except PowerCut:
                wake.close()
                slots.cut()
                cut_count += 1
                continue
        finally:
            link.close()
        if campaign is None:  # registered by its first report: start the upgrade now
            rc, out, err = await ops.cc("upgrade", image["id"], "--all", "--json")
            assert rc == 0, err
            campaign = out
            continue
        if action == agent_mod.REBOOT:
            continue
        if agent.seq == 2 and agent.state == 0 and not agent.s["unsent"]:
            break
        await asyncio.sleep(0.05)
    assert agent.seq == 2, agent.s
    assert cut_count == CUTS
    assert Path(slots.path(slots.running())).read_bytes() == data
    refetched = fetched - IMAGE_SIZE
    print(f"\n{CUTS} power cuts, {boots} boots: {fetched} bytes fetched for a {IMAGE_SIZE} byte "
          f"image, {refetched} re-fetched = {refetched / CUTS:.0f} bytes per cut "
          f"(bound {16384 + BLOCK})")
    assert 0 <= refetched <= CUTS * (16384 + BLOCK)
    status = await ops.json("status")
    camp = await ops.json("status", str(status[-1]["id"]))
    (job,) = camp["jobs"]
    assert (job["state"], job["result"]) == ("succeeded", "success")
