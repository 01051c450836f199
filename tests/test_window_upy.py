"""The windowed download on the real MicroPython unix port (tests/upy.py: ``micropython boot.py``
+ ``main.py`` under ``-X heapsize=96k``, mpy-cross-compiled agent, default configuration)
through the fault relay: loss, duplication and reordering both ways, a few ms of delay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from collections.abc import Callable

from cc import bundle
from proto.codes import Result
from sim.relay import DOWN, UP, Faults, Relay
from test_agent_e2e import image_bytes as noise
from test_upy_agent import CLASS, updated
from upy import CC, Board, make_app

SIZE = 20 * 1024
HEAP = "96k"  # the agent under -X heapsize=64k is issue 10's work in progress (tests/upy.py)


def count_requests(counts: dict[str, int]) -> Callable[[str, bytes], None]:
    """A relay tap counting the device's NON and CON requests as they come in."""

    def tap(d: str, data: bytes) -> None:
        if d == UP and len(data) > 1 and data[1] and data[1] < 32:  # a request
            kind = (data[0] >> 4) & 3
            counts["non"] += kind == 1
            counts["con"] += kind == 0

    return tap


async def test_windowed_update_on_micropython_through_the_lossy_relay(gateway,
                                                                         tmp_path: Path) -> None:
    f = Faults(loss=0.2, dup=0.05, reorder=0.1, reorder_hold=0.02, delay=0.002)
    requests = {"non": 0, "con": 0}
    async with Relay(("127.0.0.1", 0), ("127.0.0.1", gateway.device_port), up=f, down=f,
                     seed=5, duration=150) as relay:
        relay.tap = count_requests(requests)
        cc = CC(gateway, tmp_path)
        trust = await asyncio.to_thread(cc.keys)
        board = Board.provision(tmp_path / "w", gateway, "upy-w", CLASS, trust, heap=HEAP,
                                port=relay.address[1])
        assert "transfer" not in board.config  # the default: windowed
        def registered(b: Board) -> bool:  # its first report made it through the loss
            return any(d["id"] == "upy-w" for d in cc.json("devices"))

        runs = await asyncio.to_thread(board.run_until, registered, 4, 2)
        assert not runs[-1].crashed, runs
        app = make_app(tmp_path / "app2", version=2, extra={"data/blob.bin": noise(SIZE, 2)})
        img = await asyncio.to_thread(cc.firmware, bundle.pack(app), seq=2, device_class=CLASS)
        await asyncio.to_thread(cc.upgrade, img["id"], "upy-w")
        runs = await asyncio.to_thread(board.run_until, updated, 6, 8, 90)
        up, down = relay.counters[UP], relay.counters[DOWN]
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b")
    assert (board.slots_dir() / "b" / "data" / "blob.bin").read_bytes() == noise(SIZE, 2)
    job = await asyncio.to_thread(cc.job, "upy-w")
    assert (job["state"], job["result"]) == ("succeeded", "success")
    assert up.lost > 0 and down.lost > 0 and up.duplicated + down.duplicated > 0
    assert requests["non"] > img["size"] // 1024  # the blocks came by NON bursts
