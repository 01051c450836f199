"""Deltas on the real MicroPython unix port (tests/upy.py): a provisioned board whose factory
app bundle is image seq 1 takes seq 2 and seq 3 as deltas (a chain: each applied to the bundle
in its running slot file), upgraded by the real ``cc`` through the real gateway."""

from __future__ import annotations

from pathlib import Path

from cc import bundle
from proto.codes import Result
from test_upy_agent import CLASS, new_app, updated
from upy import CC, Board


def test_a_board_takes_a_chain_of_deltas(gateway, tmp_path: Path) -> None:
    cc = CC(gateway, tmp_path)
    trust = cc.keys()
    apps = [new_app(tmp_path, v, size=12_000) for v in (1, 2, 3)]
    for v in (2, 3):  # one module changed per release, the data file kept
        blob = (apps[0] / "data" / "blob.bin").read_bytes()
        (apps[v - 1] / "data" / "blob.bin").write_bytes(blob)
    cc.firmware(bundle.pack(apps[0]), seq=1, device_class=CLASS)
    board = Board.provision(tmp_path / "board", gateway, "upy-d", CLASS, trust, heap="104k",
                            app=apps[0])
    r = board.power_on(wakes=1)
    assert not r.crashed and "app: version 1" in r.out, r
    for v in (2, 3):
        img = cc.firmware(bundle.pack(apps[v - 1]), seq=v, device_class=CLASS)
        cc.upgrade(img["id"], "upy-d")
        runs = board.run_until(updated, power_ons=4, wakes=8)
        assert [r.crashed for r in runs] == [False] * len(runs), runs
        assert f"app: version {v} util-{v}" in runs[-1].out, runs
        assert (board.state()["seq"], board.state()["result"]) == (v, Result.SUCCESS)
        job = cc.job("upy-d")
        assert (job["state"], job["sent"]) == ("succeeded", "delta"), job
        assert job["size"] < 0.05 * img["size"], (job, img)


async def test_a_board_with_heap_to_spare_takes_a_delta_windowed(gateway, tmp_path: Path) -> None:
    """At -X heapsize=120k (pipe.WINDOW_HEAP is 112 KiB) the delta comes by NON bursts, its
    early blocks parked in a file (pipe.Parked), through a relay that loses and reorders."""
    import asyncio

    from sim.relay import UP, Faults, Relay
    from test_window_upy import count_requests

    cc = CC(gateway, tmp_path)
    trust = await asyncio.to_thread(cc.keys)
    apps = [new_app(tmp_path, v, size=40_000) for v in (1, 2)]
    import random

    rnd = random.Random(11)
    blob = bytearray((apps[0] / "data" / "blob.bin").read_bytes())
    for i in range(0, len(blob), 200):  # 200 random edits: a delta of a few blocks
        blob[i:i + 8] = rnd.randbytes(8)
    (apps[1] / "data" / "blob.bin").write_bytes(bytes(blob))
    await asyncio.to_thread(cc.firmware, bundle.pack(apps[0]), seq=1, device_class=CLASS)
    f = Faults(loss=0.1, reorder=0.2, reorder_hold=0.02, delay=0.002)
    requests = {"non": 0, "con": 0}
    async with Relay(("127.0.0.1", 0), ("127.0.0.1", gateway.device_port), up=f, down=f,
                     seed=3, duration=120) as relay:
        relay.tap = count_requests(requests)
        board = Board.provision(tmp_path / "board", gateway, "upy-dw", CLASS, trust,
                                heap="120k", app=apps[0], port=relay.address[1], block_size=256)
        r = await asyncio.to_thread(board.power_on, 1)
        assert not r.crashed and "app: version 1" in r.out, r
        img = await asyncio.to_thread(cc.firmware, bundle.pack(apps[1]), seq=2,
                                      device_class=CLASS)
        await asyncio.to_thread(cc.upgrade, img["id"], "upy-dw")
        runs = await asyncio.to_thread(board.run_until, updated, 4, 8)
        lost = relay.counters[UP].lost
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    assert (board.state()["seq"], board.state()["result"]) == (2, Result.SUCCESS)
    job = await asyncio.to_thread(cc.job, "upy-dw")
    assert (job["state"], job["sent"]) == ("succeeded", "delta"), job
    assert requests["non"] > 2 and lost > 0, (requests, job["size"], job["sent"])  # the delta's blocks by NON bursts, through loss
    assert job["size"] > 4 * 256, job  # blocks enough for a window
    assert not list((tmp_path / "board").rglob("*.park"))  # the park file is gone
