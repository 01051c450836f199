"""Power cuts at 20 random points of a transfer: the device always ends on the new image.

The slot storage loses every write not yet ``sync``-ed (what a power cut does to a flash
write cache); the agent object and its socket are dropped at the cut and a new one starts on
the same files, as a rebooted board would. Every block received is counted: a resumed download
may re-fetch at most 16 KiB (the persistence interval) plus the block in flight, per cut.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from powercut import PowerCut, PowerOns, settled
from sim.aio import AioLink
from test_agent_e2e import CLASS, Ops, image_bytes

IMAGE_SIZE = 256 * 1024
BLOCK = 1024
CUTS = 20


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
    n = fetched = 0  # exchanges since the upgrade started, bytes of blocks received

    async def cut_at_exchange_n(link: AioLink, req: Any) -> Any:
        nonlocal n, fetched
        if cuts and n >= cuts[0]:
            cuts.pop(0)
            raise PowerCut
        resp = await link.request(req)
        n += 1
        if resp is not None and resp.block2 is not None:
            fetched += len(resp.payload)
        return resp

    p = PowerOns(config, root, gateway.device_port)
    await p.run(lambda a: True)  # registered by its first report: start the upgrade now
    campaign = await ops.json("upgrade", image["id"], "--all")
    agent = await p.run(settled(2), exchange=cut_at_exchange_n)
    assert agent.seq == 2, agent.s
    assert p.cuts == CUTS
    assert Path(p.slots.path(p.slots.running())).read_bytes() == data
    refetched = fetched - IMAGE_SIZE
    print(f"\n{CUTS} power cuts, {p.boots} boots: {fetched} bytes fetched for a {IMAGE_SIZE} "
          f"byte image, {refetched} re-fetched = {refetched / CUTS:.0f} bytes per cut "
          f"(bound {16384 + BLOCK})")
    assert 0 <= refetched <= CUTS * (16384 + BLOCK)
    camp = await ops.json("status", str(campaign["id"]))
    (job,) = camp["jobs"]
    assert (job["state"], job["result"]) == ("succeeded", "success")
