"""An encrypted update on the real MicroPython unix port (tests/upy.py): the board's own
cryptolib, its firmware key from `cc devices add --key`, killed with SIGKILL mid-download and
resumed (the CTR position comes from the persisted offset); and a compressible one, sent
deflated then encrypted, killed after its first checkpoint (decrypt, then inflate, resumed)."""

from __future__ import annotations

from pathlib import Path

from cc import bundle
from proto.codes import Result, State
from test_encrypted_e2e import holds_run, plaintext
from test_upy_agent import CLASS, new_app, updated
from upy import CC, Board, make_app


def _keyed_board(gateway, tmp_path: Path, device_id: str) -> tuple[CC, Board]:
    """A board enrolled with `cc devices add --key` (report and firmware keys), reported once."""
    cc = CC(gateway, tmp_path)
    trust = cc.keys()
    dev = cc.json("devices", "add", device_id, "--class", CLASS, "--key")
    board = Board.provision(tmp_path / device_id, gateway, device_id, CLASS, trust,
                            key=dev["key"], fw_key=dev["fw_key"])
    assert not board.power_on(wakes=1).crashed
    return cc, board


def test_encrypted_update_resumes_after_kill_9_on_the_real_port(gateway, tmp_path: Path) -> None:
    cc, board = _keyed_board(gateway, tmp_path, "upy-e")
    app = new_app(tmp_path, 2, size=60_000)
    img = cc.json("firmware", "add", str(_write(tmp_path, bundle.pack(app))), "--version", "2",
                  "--class", CLASS, "--encrypt")
    assert img["encrypted"] and img["recipients"] == 1
    cc.upgrade(img["id"], "upy-e")
    board.kill_mid_download(32768, lambda b: b.state().get("offset", 0) >= 16384)
    s = board.state()
    assert s["state"] == State.DOWNLOADING and 16384 <= s["offset"] <= 32768, s
    assert "wk" in s["img"]  # only the wrapped key is on flash
    runs = board.run_until(updated, power_ons=4, wakes=8)
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b")
    assert "app: version 2" in "".join(r.out for r in runs)
    assert (board.slots_dir() / "b.bin").read_bytes() == bundle.pack(app)  # decrypted
    assert cc.job("upy-e")["result"] == "success"


def test_encrypted_compressed_update_resumes_after_kill_9_on_the_real_port(
        gateway, tmp_path: Path) -> None:
    cc, board = _keyed_board(gateway, tmp_path, "upy-ez")
    app = make_app(tmp_path / "app2z", version=2,
                   extra={"data/table.py": plaintext(200_000)})  # source: compresses ~13x
    packed = bundle.pack(app)
    img = cc.json("firmware", "add", str(_write(tmp_path, packed)), "--version", "2",
                  "--class", CLASS, "--encrypt")
    sent = img["compressed"]
    assert img["encrypted"] and sent["kind"] == "deflate" and sent["sent_size"] < len(packed) // 4
    assert not holds_run((gateway.data / "blobs" / sent["sent"]).read_bytes(), packed)
    cc.upgrade(img["id"], "upy-ez")
    half = sent["sent_size"] // 2  # restart points every 32 KiB of image: ~2 KB sent each
    board.kill_mid_download(half, lambda b: (b.state().get("cp") or {}).get("t", 0) > 0)
    s = board.state()  # killed after a restart point (transfer and image offsets) reached flash
    assert s["state"] == State.DOWNLOADING and 0 < s["cp"]["t"] < sent["sent_size"], s
    assert s["img"]["sent"][1] == 1 and "wk" in s["img"]
    runs = board.run_until(updated, power_ons=4, wakes=8)
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b")
    assert (board.slots_dir() / "b.bin").read_bytes() == packed  # decrypted, then inflated
    job = cc.job("upy-ez")
    assert (job["result"], job["sent"], job["size"]) == ("success", "deflate", sent["sent_size"])


def _write(tmp: Path, data: bytes) -> Path:
    path = tmp / "app2.bundle"
    path.write_bytes(data)
    return path
