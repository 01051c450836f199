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
