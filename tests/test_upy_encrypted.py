"""An encrypted update on the real MicroPython unix port (tests/upy.py): the board's own
cryptolib, its firmware key from `cc devices add --key`, killed with SIGKILL mid-download and
resumed (the CTR position comes from the persisted offset)."""

from __future__ import annotations

from pathlib import Path

from cc import bundle
from proto.codes import Result
from test_upy_agent import CLASS, new_app, updated
from upy import CC, Board


def test_encrypted_update_resumes_after_kill_9_on_the_real_port(gateway, tmp_path: Path) -> None:
    cc = CC(gateway, tmp_path)
    trust = cc.keys()
    dev = cc.json("devices", "add", "upy-e", "--class", CLASS, "--key")
    board = Board.provision(tmp_path / "e", gateway, "upy-e", CLASS, trust,
                            key=dev["key"], fw_key=dev["fw_key"])
    assert not board.power_on(wakes=1).crashed
    app = new_app(tmp_path, 2, size=60_000)
    img = cc.json("firmware", "add", str(_write(tmp_path, bundle.pack(app))), "--version", "2",
                  "--class", CLASS, "--encrypt")
    assert img["encrypted"] and img["recipients"] == 1
    cc.upgrade(img["id"], "upy-e")
    p = board.start(wakes=20)
    assert board.wait_for(lambda b: b.state().get("offset", 0) >= 16384, p)
    board.kill(p)
    assert "wk" in board.state()["img"]  # only the wrapped key is on flash
    runs = board.run_until(updated, power_ons=4, wakes=8)
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b")
    assert "app: version 2" in "".join(r.out for r in runs)
    assert (board.slots_dir() / "b.bin").read_bytes() == bundle.pack(app)  # decrypted
    assert cc.job("upy-e")["result"] == "success"


def _write(tmp: Path, data: bytes) -> Path:
    path = tmp / "app2.bundle"
    path.write_bytes(data)
    return path
