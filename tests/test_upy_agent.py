"""The agent on the real MicroPython unix port (tests/upy.py): a board directory provisioned as
``cc devices provision`` writes it, run as ``micropython boot.py`` + ``micropython main.py``
processes under ``-X heapsize=`` (``upy.HEAP_BUDGET``) against the real gateway, upgraded by the real ``cc``.
Images are app bundles (cc/bundle.py): the agent unpacks them into the inactive slot directory
and main.py imports the app from the running one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cc import bundle
from proto.codes import Result, State
from test_agent_e2e import image_bytes as noise
from upy import CC, HEAP_BUDGET, REBOOT_EXIT, Board, Relay, flip_last_byte_of_blocks, make_app

CLASS = "upy-board"
BIG = 40_000  # bytes of app data: spans two persisted offsets (every 16 KiB)


def setup(gateway, tmp: Path, name: str = "upy-1", **cfg) -> tuple[CC, Board]:
    cc = CC(gateway, tmp)
    trust = cc.keys()
    board = Board.provision(tmp / name, gateway, name, CLASS, trust, **cfg)
    r = board.power_on(wakes=1)  # the first report registers the board
    assert not r.crashed and "app: version 1" in r.out, r
    return cc, board


def new_app(tmp: Path, version: int, ok: bool = True, size: int = 2000) -> Path:
    return make_app(tmp / f"app{version}", version=version, self_test=ok,
                    extra={"data/blob.bin": noise(size, version)})


def updated(b: Board) -> bool:
    s = b.state()
    return s.get("state") == State.IDLE and not s.get("unsent") and s.get("job") is None


def test_the_device_and_harness_agree_on_the_reboot_status() -> None:
    from device import board

    assert board.REBOOT_EXIT == REBOOT_EXIT


def test_full_update_installs_the_bundle_and_runs_the_new_app(gateway, tmp_path: Path) -> None:
    """Within the heap budget: every power-on of this update runs under HEAP_BUDGET."""
    cc, board = setup(gateway, tmp_path)
    board.heap = HEAP_BUDGET
    app = new_app(tmp_path, 2, size=BIG)
    img = cc.firmware(bundle.pack(app), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    runs = board.run_until(updated, power_ons=4, wakes=8)
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    assert runs[0].reboot and "app: version 2 util-2" in runs[1].out, runs
    assert "out_of_memory" not in cc.ok("events")
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b")
    assert (board.slots_dir() / "b" / "data" / "blob.bin").read_bytes() == noise(BIG, 2)
    assert board.slot_size("b") == img["size"]
    job = cc.job("upy-1")
    assert (job["state"], job["result"]) == ("succeeded", "success")


PROBE = """
import json, sys
from fota import board
cfg = json.load(open("fota.json"))
slots = board.make_slots(cfg)
link = board.make_link(cfg)
seen = []
run = link.run
def probe(m):  # the window's first run: the download's modules are all in
    if not seen:
        seen.append(" ".join(sorted(k[5:] for k in sys.modules if k.startswith("fota."))))
    return run(m)
link.run = probe
out = board.run(cfg, slots=slots, link=link, reset=lambda: None, wakes=3)
print("ACTION", out[0])
print("DOWNLOAD", seen[0] if seen else "-")
print("AFTER", " ".join(sorted(k[5:] for k in sys.modules if k.startswith("fota."))))
"""


def test_a_download_holds_only_the_code_it_runs(gateway, tmp_path: Path) -> None:
    """Heap: each phase's code is imported for it and dropped after (agent.py); the window
    runs with neither the offer's (signature, manifest), nor the CBOR decoder, nor
    stop-and-wait, and none of the download's code outlives it."""
    cc, board = setup(gateway, tmp_path)
    img = cc.firmware(bundle.pack(new_app(tmp_path, 2)), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    board.set_config(caps=0)  # a plain image (a decoded one adds pipe and its decoder)
    (board.root / "probe.py").write_text(PROBE)
    p = subprocess.run(board.command("probe.py"), cwd=board.root, capture_output=True,
                       text=True, timeout=60)
    lines = dict(s.split(" ", 1) for s in p.stdout.splitlines() if s[:1].isupper() and " " in s)
    assert p.returncode == 0 and lines.get("ACTION") == "reboot", (p.stdout, p.stderr)
    during, after = set(lines["DOWNLOAD"].split()), set(lines["AFTER"].split())
    assert {"agent", "coap", "udp", "download", "fetch", "burst"} <= during, lines["DOWNLOAD"]
    assert not {"offer", "manifest", "ed25519", "sha512", "cbordecode", "configure", "command",
                "bootcheck", "stopwait", "pipe", "keywrap", "install", "startup"} & during, \
        lines["DOWNLOAD"]
    assert not {"download", "fetch", "burst", "cbordecode", "offer", "bundle", "install",
                "command"} & after, lines["AFTER"]


OOM_PROBE = """
import json, sys
from fota import board, coap
from fota.agent import Agent
from fota.state import Store
cfg = json.load(open("fota.json"))
slots = board.make_slots(cfg)
link = board.make_link(cfg)
agent = Agent(cfg, slots, Store(cfg.get("state", "fota_state.json")))
run = link.run
calls = [0]
def failing(m):  # the window's second run: out of RAM in the link, as recv can
    calls[0] += 1
    if calls[0] == 2:
        raise MemoryError
    return run(m)
link.run = failing
out = coap.run(agent.wake(), link)
print("OOM", agent.ooms, agent.oom_phase, agent.window_stats is None)
print("AFTER", " ".join(sorted(k[5:] for k in sys.modules if k.startswith("fota."))))
for _ in range(6):
    out = coap.run(agent.wake(), link)
    if out[0] == "reboot":
        break
print("ACTION", out[0])
"""


def test_out_of_ram_in_the_download_leaves_none_of_it_in_the_heap(gateway, tmp_path: Path) -> None:
    """An out-of-RAM wake drops its phase's code and objects (the window, burst, the fetch):
    left in, they made every later report of that power-on run out too."""
    cc, board = setup(gateway, tmp_path)
    img = cc.firmware(bundle.pack(new_app(tmp_path, 2, size=BIG)), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    board.set_config(caps=0)
    (board.root / "oom.py").write_text(OOM_PROBE)
    p = subprocess.run(board.command("oom.py"), cwd=board.root, capture_output=True,
                       text=True, timeout=60)
    lines = dict(s.split(" ", 1) for s in p.stdout.splitlines() if s[:1].isupper() and " " in s)
    assert p.returncode == 0 and "Traceback" not in p.stdout, (p.stdout, p.stderr)
    assert lines["OOM"] == "1 4 True", lines  # one out-of-RAM, in the download (PH_DOWNLOAD)
    assert not {"download", "fetch", "burst"} & set(lines["AFTER"].split()), lines["AFTER"]
    assert lines["ACTION"] == "reboot", lines  # the next wake resumed and installed
    assert "out_of_memory" in cc.ok("events")  # reported at once


def test_kill_9_mid_download_resumes_from_the_persisted_offset(gateway, tmp_path: Path) -> None:
    cc, board = setup(gateway, tmp_path)
    app = new_app(tmp_path, 2, size=80_000)
    img = cc.firmware(bundle.pack(app), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    board.kill_mid_download(32768, lambda b: b.state().get("offset", 0) >= 16384)
    s = board.state()
    assert s["state"] == State.DOWNLOADING and 16384 <= s["offset"] <= 32768, s
    runs = board.run_until(updated, power_ons=4, wakes=8)
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b")
    assert (board.slots_dir() / "b" / "data" / "blob.bin").read_bytes() == noise(80_000, 2)


def test_failed_self_test_rolls_back_to_the_factory_app(gateway, tmp_path: Path) -> None:
    cc, board = setup(gateway, tmp_path)
    img = cc.firmware(bundle.pack(new_app(tmp_path, 2, ok=False)), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    runs = board.run_until(updated, power_ons=5, wakes=8)
    assert [r.crashed for r in runs] == [False] * len(runs), runs
    assert "app: version 2" in runs[1].out and runs[1].reboot, runs
    assert "app: version 1" in runs[-1].out
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (1, Result.ROLLED_BACK, "a")
    job = cc.job("upy-1")
    assert (job["state"], job["result"]) == ("failed", "rolled_back")


def test_wrong_key_and_tampered_image_are_refused(gateway, tmp_path: Path) -> None:
    cc, board = setup(gateway, tmp_path)
    # signed by a key the board does not trust
    stranger = CC(gateway, tmp_path / "stranger")
    stranger.keys()
    img = stranger.firmware(bundle.pack(new_app(tmp_path, 2)), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    runs = board.run_until(updated, power_ons=2, wakes=4)
    assert not any(r.crashed for r in runs), runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (1, Result.SIGNATURE_INVALID, "a")
    assert cc.job("upy-1")["result"] == "signature_invalid"
    # a valid manifest, but a man in the middle alters the blocks
    img = cc.firmware(bundle.pack(new_app(tmp_path, 3)), seq=3, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    relay = Relay(gateway.device_port, flip_last_byte_of_blocks)
    board.set_config(port=relay.port)
    try:
        runs = board.run_until(updated, power_ons=2, wakes=6)
    finally:
        relay.close()
    assert not any(r.crashed for r in runs) and relay.rewritten > 0, runs
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (1, Result.INTEGRITY_FAILURE, "a")
    assert cc.job("upy-1")["result"] == "integrity_failure"


def test_report_key_update_and_a_wrong_key_gets_nowhere(gateway, tmp_path: Path) -> None:
    cc = CC(gateway, tmp_path)
    trust = cc.keys()
    dev = cc.json("devices", "add", "upy-k", "--class", CLASS, "--key")
    board = Board.provision(tmp_path / "k", gateway, "upy-k", CLASS, trust, key=dev["key"])
    img = cc.firmware(bundle.pack(new_app(tmp_path, 2)), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-k")
    runs = board.run_until(updated, power_ons=4, wakes=8)
    assert not any(r.crashed for r in runs), runs
    assert (board.state()["seq"], board.running()) == (2, "b")
    assert cc.job("upy-k")["result"] == "success"
    # a board with the wrong report key: the gateway answers nothing it would act on
    bad = Board.provision(tmp_path / "bad", gateway, "upy-k", CLASS, trust, key="11" * 32)
    r = bad.power_on(wakes=2)
    assert not r.crashed, r
    assert bad.state().get("job") is None and bad.running() == "a"
    (row,) = [d for d in cc.json("devices") if d["id"] == "upy-k"]
    assert row["seq"] == 2, row  # the impostor's reports changed nothing


def test_out_of_ram_is_a_result_at_every_heap_size(gateway, tmp_path: Path) -> None:
    """One board, one update, powered on with a heap growing from below what the download
    needs to a comfortable size: every run ends cleanly (no traceback), each short one reports
    result out_of_memory with the phase, the running image stays, and the update completes."""
    cc, board = setup(gateway, tmp_path)
    img = cc.firmware(bundle.pack(new_app(tmp_path, 2, size=BIG)), seq=2, device_class=CLASS)
    cc.upgrade(img["id"], "upy-1")
    runs = []  # (heap, reported out of RAM in a phase, the running image stayed)
    for heap in (52, 58, 64, 70, 76, 128, 128):  # under ~40k the agent's code does not load;
        # to ~48k "out of RAM starting the agent", a clean exit; above, out-of-RAM reports
        r = board.power_on(wakes=2, heap=f"{heap}k")
        assert not r.crashed, (heap, r)
        kept = board.running() == "a" or board.state()["state"] == State.UPDATING
        runs.append((heap, "fota: out of RAM in phase" in r.out, kept))
        if updated(board) and board.state()["seq"] == 2:
            break
    s = board.state()
    assert (s["seq"], s["result"], board.running()) == (2, Result.SUCCESS, "b"), s
    kinds = {(short, kept) for _, short, kept in runs}
    assert (True, True) in kinds, f"no heap size was short: the sweep starts too high: {runs}"
    assert (True, False) not in kinds, f"a short run lost the running image: {runs}"
    assert not runs[-1][1], runs  # the run that completed the update had the RAM
    events = cc.ok("events", timeout=60)
    assert "out_of_memory" in events and "signature_invalid" not in events
    assert cc.job("upy-1")["result"] == "success"
