"""``fota-sim`` as a user runs it: a subprocess against the real gateway, upgraded by ``cc``."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from test_agent_e2e import CLASS, Ops, image_bytes

REPO = Path(__file__).resolve().parent.parent


async def test_fota_sim_updates_and_rolls_back_its_failing_share(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(30_000, 11), 2)
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.main", "--devices", "3", "--gateway", gateway.device_uri,
        "--class", CLASS, "--trust", trust, "--wake", "0.3", "--state", str(tmp_path / "st"),
        "--fail-boot-percent", "34", "--id-prefix", "box",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await ops.wait_registered(["box-000", "box-001", "box-002"])
        rc, camp = await ops.upgrade(image["id"])
    finally:
        sim.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(sim.communicate(), 15)
    assert sim.returncode == 0, err.decode()
    assert rc == 1  # one device in three runs images that fail their boot check
    results = sorted((j["state"], j["result"]) for j in camp["jobs"])
    assert results == [("failed", "rolled_back"), ("succeeded", "success"), ("succeeded", "success")]
    text = out.decode()
    assert text.count("updating -> idle (confirm)") == 2, text
    assert text.count("updating -> idle (rollback)") == 1, text
    assert text.count("idle -> downloading (accept)") == 3, text
    # the state survives the process: a second run starts from it (seq 2 for the confirmed)
    states = sorted(p.read_text() for p in (tmp_path / "st").glob("*/state.json"))
    assert sum('"seq": 2' in s for s in states) == 2


def test_fota_sim_refuses_bad_arguments() -> None:
    import subprocess

    for args in (["--gateway", "http://x", "--class", "c", "--trust", "00" * 32],
                 ["--gateway", "coap://127.0.0.1:1", "--class", "c", "--trust", "abc"]):
        p = subprocess.run([sys.executable, "-m", "sim.main", *args], cwd=REPO,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "fota-sim:" in p.stderr, p.stderr
