"""Rollout campaigns with the simulator: ``fota-sim`` (the real agent, many devices in one
process) against the real gateway, driven by the real ``cc`` (subprocesses).

- 200 devices, 5 % of them with images that fail their boot check: the campaign pauses itself
  within one wave and everybody outside the released phases stays on the old image; the
  download cap is never exceeded (checked on the event log).
- A gateway SIGKILL and restart mid-campaign: it goes on from where it was; then a cancel stops
  new offers and leaves the installed images alone, and a device caught mid-download stops on
  the CANCEL command.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness import control, wait_devices
from test_agent_e2e import CLASS, Ops, image_bytes

from device import download

REPO = Path(__file__).resolve().parent.parent
JOB_EDGE = re.compile(r"^job (\d+): (\w+) -> (\w+)")
HOLDS_SLOT = {"offered", "downloading"}


async def start_sim(gw, tmp: Path, trust: str, n: int, *extra: str):
    out = open(tmp / "sim.log", "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.main", "--devices", str(n), "--gateway", gw.device_uri,
        "--class", CLASS, "--trust", trust, "--state", str(tmp / "sim-state"), *extra,
        cwd=REPO, stdout=out, stderr=asyncio.subprocess.STDOUT)
    return proc, out


async def stop_sim(proc, out) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGCONT)  # if a failed test left it stopped
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    out.close()


async def all_events(ctx, gw) -> list[dict[str, Any]]:
    """The whole event log, page by page (a page is at most 1000 events)."""
    seen: dict[int, dict[str, Any]] = {}
    since = 0.0
    for _ in range(100):  # bounded
        code, page = await control(ctx, gw, "GET", "ev", query=f"since={since:.6f}")
        fresh = [e for e in page if e["id"] not in seen]
        for e in fresh:
            seen[e["id"]] = e
        if len(page) < 1000 or not fresh:
            break
        since = page[-1]["time"]
    return sorted(seen.values(), key=lambda e: e["id"])


def max_concurrent_downloads(events: list[dict[str, Any]], campaign: int) -> int:
    state: dict[str, str] = {}
    peak = 0
    for e in events:
        m = JOB_EDGE.match(e["detail"]) if e["campaign"] == campaign else None
        if m:
            state[m.group(1)] = m.group(3)
            peak = max(peak, sum(1 for s in state.values() if s in HOLDS_SLOT))
    return peak


async def test_200_devices_pause_within_one_wave(gateway, tmp_path: Path, coap_client) -> None:
    """Seed 9 puts none of the 10 failing devices in the canary and 4 in wave 1 (phases are a
    shuffle seeded by the image id, the image is fixed): the canary passes, wave 1 reaches the
    5 % threshold (3 of 60 released) and the campaign pauses itself."""
    from sim.main import make_specs, run_fleet

    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(3000, 60), 2)
    specs = make_specs(200, tmp_path / "sim-state", CLASS, [trust], wake_s=0.5,
                       fail_boot_percent=5, ack_timeout=1.0, seed=9)
    failing = {sp.id for sp in specs if sp.fail_boot}
    stop = asyncio.Event()
    fleet = asyncio.create_task(run_fleet(specs, "127.0.0.1", gateway.device_port, stop,
                                          lambda line: None))
    try:
        await wait_devices(coap_client, gateway, 200, limit=30)
        t0 = time.monotonic()
        rc, camp = await ops.upgrade(image["id"], "--canary", "10", "--wave", "25%",
                                     "--max-failures", "5%", "--max-downloads", "20",
                                     "--defer", "1", timeout=60)
        took = time.monotonic() - t0
        assert rc == 1 and camp["state"] == "paused", camp["state"]
        # the fleet keeps waking: nothing new may be offered while every device reports again
        code, rows = await control(coap_client, gateway, "GET", "dev")
        paused_seen = {d["id"]: d["last_seen"] for d in rows}
        for _ in range(300):  # bounded: each device wakes every 0.5 s, or 1 s when deferred
            code, rows = await control(coap_client, gateway, "GET", "dev")
            if all(d["last_seen"] > paused_seen[d["id"]] for d in rows):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a device never reported after the pause")
        code, later = await control(coap_client, gateway, "GET", f"camp/{camp['id']}")
    finally:
        stop.set()
        await asyncio.wait_for(fleet, 20)
    phases = camp["phases"]
    assert [p["total"] for p in phases] == [10, 50, 50, 50, 40]
    assert [p["released"] for p in phases] == [True, True, False, False, False], (
        camp["reason"], [j for j in camp["jobs"] if j["state"] == "failed"], sorted(failing))
    assert phases[0]["counts"] == {"succeeded": 10}
    for p in phases[2:]:
        assert p["counts"] == {"queued": p["total"]}, p
    assert "threshold of 5%" in camp["reason"]
    assert later["counts"]["queued"] >= 140 and later["state"] == "paused"
    failed = [j for j in camp["jobs"] if j["state"] == "failed"]
    assert 3 <= len(failed) <= 4 and {j["result"] for j in failed} == {"rolled_back"}
    assert {j["device"] for j in failed} <= failing
    devices = {d["id"]: d for d in (await control(coap_client, gateway, "GET", "dev"))[1]}
    stayed = [j for j in later["jobs"] if j["state"] in ("queued", "failed")]
    assert len(stayed) >= 143  # the rest stays on the old image
    assert all(devices[j["device"]]["seq"] == 1 for j in stayed), [
        (j, devices[j["device"]]) for j in stayed if devices[j["device"]]["seq"] != 1]
    events = await all_events(coap_client, gateway)
    assert max_concurrent_downloads(events, camp["id"]) <= 20
    exported = await ops.json("events", "--since", "1h")
    assert [e["id"] for e in exported] == [e["id"] for e in events]
    print(f"200 devices: paused after {took:.1f} s, {later['counts']}, reason: {camp['reason']}")


async def test_restart_mid_campaign_then_cancel(gateway, tmp_path: Path, coap_client) -> None:
    """Stop-and-wait downloads: a device asks for no block past a progress report (one each
    STEP bytes) before that report is answered. So a job whose progress at the cancel is below
    the last report's offset has a report ahead of it, answered with CANCEL: it is caught
    mid-download whatever the timing. The fleet is frozen (SIGSTOP) while such a job is picked
    and the campaign cancelled (a report in flight moves a frozen job on by one STEP at most)."""
    ops = Ops(gateway, tmp_path)
    ctx = coap_client
    trust = await ops.keys()
    size = 64_000
    step, _ = download._report_step(SimpleNamespace(offset=0), {"size": size})
    last_report = (size - 1) // step * step
    image = await ops.image(image_bytes(size, 61), 2)
    sim, out = await start_sim(gateway, tmp_path, trust, 30, "--wake", "0.3",
                               "--ack-timeout", "0.5", "--block-size", "256",
                               "--transfer", "stop-and-wait")
    try:
        await wait_devices(ctx, gateway, 30, limit=30)
        camp = await ops.json("upgrade", image["id"], "--all", "--canary", "3", "--wave", "9",
                              "--max-downloads", "4", "--defer", "1")
        n = camp["id"]

        async def until(pred, limit: float) -> dict[str, Any]:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                code, c = await control(ctx, gateway, "GET", f"camp/{n}")
                if code == "2.05" and pred(c):
                    return c
                await asyncio.sleep(0.05)
            raise AssertionError(f"campaign never got there: {c}")

        def done(c: dict[str, Any]) -> int:
            return c["counts"].get("succeeded", 0)

        def busy(c: dict[str, Any]) -> bool:
            return c["counts"].get("downloading", 0) > 0

        before = await until(lambda c: sum(p["released"] for p in c["phases"]) >= 2 and busy(c),
                             40)
        gateway.kill()  # SIGKILL in the middle of wave 1
        await asyncio.to_thread(gateway.restart)
        code, after = await control(ctx, gateway, "GET", f"camp/{n}")
        assert sum(p["released"] for p in after["phases"]) >= 2
        assert done(after) >= done(before)
        await until(lambda c: done(c) >= 6, 40)

        def early(c: dict[str, Any]) -> list[dict[str, Any]]:
            return [j for j in c["jobs"] if j["state"] == "downloading"
                    and 0 < j["progress"] < last_report - step]

        for _ in range(400):  # bounded: a download takes many freezes' worth of time
            sim.send_signal(signal.SIGSTOP)
            code, mid = await control(ctx, gateway, "GET", f"camp/{n}")
            if early(mid):
                break
            sim.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"no download in its early part: {mid['counts']}")
        code, cancelled = await control(ctx, gateway, "POST", f"camp/{n}/cancel")
        sim.send_signal(signal.SIGCONT)
        assert code == "2.04" and cancelled["state"] == "cancelled"
        caught = early(mid)  # at the cancel: below last_report, a report in flight at most
        log = tmp_path / "sim.log"
        for _ in range(400):  # bounded: each caught device hears CANCEL at its next report
            text = log.read_text()
            if all(f"{j['device']}: downloading -> idle (cancel)" in text for j in caught):
                break
            await asyncio.sleep(0.05)
        # cancelled, or past the point of no return when the cancel came (downloaded: the agent
        # installs without asking again) and then succeeded
        final = await until(lambda c: all(j["state"] in ("succeeded", "cancelled")
                                          for j in c["jobs"]), 40)
    finally:
        await stop_sim(sim, out)
    text = log.read_text()
    assert all(f"{j['device']}: downloading -> idle (cancel)" in text for j in caught), caught
    states = {j["id"]: j["state"] for j in final["jobs"]}
    assert {states[j["id"]] for j in caught} == {"cancelled"}, (caught, final["jobs"])
    assert done(final) >= done(mid) and done(final) < 30
    events = await all_events(ctx, gateway)
    (cancel_event,) = [e for e in events if e["campaign"] == n and e["kind"] == "campaign"
                       and e["detail"].endswith("-> cancelled")]
    assert not [e for e in events if e["id"] > cancel_event["id"] and e["campaign"] == n
                and "-> offered" in e["detail"]]
    assert max_concurrent_downloads(events, n) <= 4
    code, rows = await control(ctx, gateway, "GET", "dev")
    devices = {d["id"]: d for d in rows}
    # installed images stay; the cancelled ones never replaced theirs
    assert [devices[j["device"]]["seq"] for j in final["jobs"]] == [
        2 if j["state"] == "succeeded" else 1 for j in final["jobs"]], final["jobs"]
