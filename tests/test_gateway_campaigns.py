"""Rollout campaigns against a real gateway, devices played with raw reports: phases and their
gates, the error threshold, pause/resume/retry, download caps, windows, self-deferral, tags,
a restart in the middle."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import control, publish_image
from test_gateway_flow import report

from proto.codes import Op, Result, State
from proto.keys import CmdKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"campaign key").digest())
SEQ = 5


async def start(ctx, gw, devices, **policy):
    img = await publish_image(ctx, gw, os.urandom(2000), KEY, seq=SEQ, device_class="esp32")
    for d in devices:
        assert await report(ctx, gw, device=d) is None
    code, camp = await control(ctx, gw, "POST", "camp",
                               {"image": img["id"], "devices": list(devices), **policy})
    assert code == "2.01", camp
    return camp


async def camp_of(ctx, gw, n):
    code, c = await control(ctx, gw, "GET", f"camp/{n}")
    assert code == "2.05", c
    return c


async def offers(ctx, gw, devices):
    """One wake of each device: {device: command or None}."""
    return {d: await report(ctx, gw, device=d) for d in devices}


async def succeed(ctx, gw, device, job):
    assert await report(ctx, gw, device=device, seq=SEQ, result=Result.SUCCESS, job=job) is None


async def fail(ctx, gw, device, job):
    await report(ctx, gw, device=device, result=Result.ROLLED_BACK, job=job)


async def test_phases_threshold_resume_retry(gateway, coap_client):
    ctx, gw = coap_client, gateway
    devs = [f"d{i}" for i in range(10)]
    camp = await start(ctx, gw, devs, canary=2, wave=4, max_failures=2)
    n = camp["id"]
    assert [p["total"] for p in camp["phases"]] == [2, 4, 4]
    assert camp["policy"]["max_failures"] == "2" and camp["policy"]["canary"] == 2
    got = await offers(ctx, gw, devs)
    canary = [d for d in devs if got[d]]
    assert canary == devs[:2]  # a device list keeps its order: the operator picks the canary
    assert all(got[d][CmdKey.OP] == Op.UPDATE for d in canary)
    await succeed(ctx, gw, canary[0], got[canary[0]][CmdKey.JOB])
    assert all(v is None for v in (await offers(ctx, gw, devs[2:])).values())  # 1 of 2: wait
    await succeed(ctx, gw, canary[1], got[canary[1]][CmdKey.JOB])
    c = await camp_of(ctx, gw, n)
    assert [p["released"] for p in c["phases"]] == [True, True, False]
    got = await offers(ctx, gw, devs[2:])
    wave1 = [d for d in devs[2:] if got[d]]
    assert wave1 == devs[2:6]
    # two failures reach max_failures=2: paused by itself, wave 2 never offered
    await fail(ctx, gw, wave1[0], got[wave1[0]][CmdKey.JOB])
    await fail(ctx, gw, wave1[1], got[wave1[1]][CmdKey.JOB])
    c = await camp_of(ctx, gw, n)
    assert c["state"] == "paused" and "threshold of 2" in c["reason"]
    assert all(v is None for v in (await offers(ctx, gw, devs[6:])).values())
    code, text = await control(ctx, gw, "POST", f"camp/{n}/pause")
    assert code == "4.09"
    # resume: the two failures are acknowledged; the wave still needs 100 %: when the last two
    # succeed it is final at 2 of 4 and pauses below its success rate
    code, c = await control(ctx, gw, "POST", f"camp/{n}/resume")
    assert code == "2.04" and c["state"] == "running" and c["reason"] is None
    await succeed(ctx, gw, wave1[2], got[wave1[2]][CmdKey.JOB])
    await succeed(ctx, gw, wave1[3], got[wave1[3]][CmdKey.JOB])
    c = await camp_of(ctx, gw, n)
    assert c["state"] == "paused" and "wave 1: 2 of 4 succeeded" in c["reason"]
    # retry: the failed devices get new jobs and succeed; then wave 2 goes
    code, c = await control(ctx, gw, "POST", f"camp/{n}/retry")
    assert code == "2.04" and c["state"] == "running", c
    again = await offers(ctx, gw, wave1[:2])
    for d in wave1[:2]:
        assert again[d][CmdKey.OP] == Op.UPDATE and again[d][CmdKey.JOB] != got[d][CmdKey.JOB]
        await succeed(ctx, gw, d, again[d][CmdKey.JOB])
    got = await offers(ctx, gw, devs[6:])
    assert all(got[d][CmdKey.OP] == Op.UPDATE for d in devs[6:])
    for d in devs[6:]:
        await succeed(ctx, gw, d, got[d][CmdKey.JOB])
    c = await camp_of(ctx, gw, n)
    assert c["state"] == "done" and c["counts"] == {"succeeded": 10}
    code, events = await control(ctx, gw, "GET", "ev", query="since=0")
    text = "\n".join(e["detail"] for e in events if e["campaign"] == n)
    for needle in ("wave 1 released (4 device(s))", "running -> paused: 2 failure(s)",
                   "paused -> running", "retried as job", "wave 2 released", "-> done"):
        assert needle in text, needle


async def test_download_cap_and_self_deferral(gateway, coap_client):
    ctx, gw = coap_client, gateway
    devs = ["a", "b", "c"]
    camp = await start(ctx, gw, devs, max_downloads=2, defer=7)
    got = await offers(ctx, gw, devs)
    assert got["a"][CmdKey.OP] == Op.UPDATE and got["b"][CmdKey.OP] == Op.UPDATE
    assert got["c"] == {CmdKey.OP: Op.DEFER, CmdKey.WAIT: 7}  # the cap: come back later
    # a downloads (still holds its slot), b defers itself (low battery): c may go
    assert await report(ctx, gw, device="a", state=State.DOWNLOADING, job=got["a"][CmdKey.JOB],
                        progress=1024) is None
    cmd = await report(ctx, gw, device="b", result=Result.DEFERRED, job=got["b"][CmdKey.JOB])
    assert cmd[CmdKey.OP] == Op.DEFER and 6 <= cmd[CmdKey.WAIT] <= 7
    c_cmd = await report(ctx, gw, device="c")
    assert c_cmd[CmdKey.OP] == Op.UPDATE
    # b comes back early, still deferred: still told to wait (no slot taken)
    cmd = await report(ctx, gw, device="b", result=Result.DEFERRED, job=got["b"][CmdKey.JOB])
    assert cmd[CmdKey.OP] == Op.DEFER
    # a's image is all there: its slot frees; b (past its wait) would be offered, but its own
    # wait is not over yet: DEFER until then
    assert await report(ctx, gw, device="a", state=State.DOWNLOADED, job=got["a"][CmdKey.JOB],
                        progress=2000) is None
    c = await camp_of(ctx, gw, camp["id"])
    b = next(j for j in c["jobs"] if j["device"] == "b")
    assert (b["state"], b["result"]) == ("queued", "deferred")


async def test_window_closed_defers_open_offers(gateway, coap_client):
    ctx, gw = coap_client, gateway
    # three hours on: 2-3 h away whenever the gateway looks, even if the hour turns in between
    hour = (time.gmtime().tm_hour + 3) % 24
    camp = await start(ctx, gw, ["w"], window={"start": f"0 {hour} * * *", "duration": 600},
                       timeout=5 * 3600)  # the window must open before the deadline
    cmd = await report(ctx, gw, device="w")
    assert cmd[CmdKey.OP] == Op.DEFER and 2 * 3600 <= cmd[CmdKey.WAIT] <= 3 * 3600 + 150
    c = await camp_of(ctx, gw, camp["id"])
    assert c["window_open"] is False and c["window_next"] > time.time() + 3600
    assert c["counts"] == {"queued": 1}
    await control(ctx, gw, "POST", f"camp/{camp['id']}/cancel")
    img = await publish_image(ctx, gw, os.urandom(999), KEY, seq=6, device_class="esp32")
    code, c = await control(ctx, gw, "POST", "camp", {
        "image": img["id"], "devices": ["w"],
        "window": {"start": "* * * * *", "duration": 120, "tz": "Asia/Kolkata"}})
    assert code == "2.01", c
    assert (await report(ctx, gw, device="w"))[CmdKey.OP] == Op.UPDATE


async def test_tags_and_targets(gateway, coap_client):
    ctx, gw = coap_client, gateway
    for d in ("t1", "t2", "t3"):
        await report(ctx, gw, device=d)
    code, dev = await control(ctx, gw, "POST", "dev/t1/tags", {"add": ["lab", "floor-2"]})
    assert code == "2.04" and dev["tags"] == ["lab", "floor-2"]
    await control(ctx, gw, "POST", "dev/t2/tags", {"add": ["lab"]})
    code, dev = await control(ctx, gw, "POST", "dev/t2/tags", {"add": ["x"], "remove": ["lab"]})
    assert dev["tags"] == ["x"]
    for path, body, expect in [("dev/nobody/tags", {"add": ["a"]}, "4.04"),
                               ("dev/t1/tags", {"add": "lab"}, "4.00"),
                               ("dev/t1/tags", {"add": ["a/b"]}, "4.00"),
                               ("dev/t1/tags", {}, "4.00")]:
        assert (await control(ctx, gw, "POST", path, body))[0] == expect, path
    img = await publish_image(ctx, gw, os.urandom(500), KEY, seq=2, device_class="esp32")
    code, c = await control(ctx, gw, "POST", "camp", {"image": img["id"], "tags": ["lab"]})
    assert code == "2.01" and c["total"] == 1
    code, c = await control(ctx, gw, "GET", f"camp/{c['id']}")
    assert [j["device"] for j in c["jobs"]] == ["t1"]
    for body in ({"image": img["id"], "tags": ["nobody-has-it"]},
                 {"image": img["id"], "tags": ["x"], "class": "esp32", "canary": -1},
                 {"image": img["id"], "all": True, "tags": ["x"]},
                 {"image": img["id"], "tags": ["x"], "wave": "150%"}):
        code, text = await control(ctx, gw, "POST", "camp", body)
        assert code == "4.00", (body, text)
    code, c = await control(ctx, gw, "POST", "camp",
                            {"image": img["id"], "class": "esp32", "tags": ["x"], "canary": 1})
    assert code == "2.01" and c["total"] == 1


async def test_restart_mid_campaign_continues(gateway, coap_client):
    ctx, gw = coap_client, gateway
    devs = [f"r{i}" for i in range(6)]
    camp = await start(ctx, gw, devs, canary=1, wave="50%", max_failures="20%")
    n = camp["id"]
    got = await offers(ctx, gw, devs)
    [first] = [d for d in devs if got[d]]
    await succeed(ctx, gw, first, got[first][CmdKey.JOB])
    got = await offers(ctx, gw, devs)
    wave1 = [d for d in devs if got[d]]
    assert len(wave1) == 3
    assert await report(ctx, gw, device=wave1[0], state=State.DOWNLOADING,
                        job=got[wave1[0]][CmdKey.JOB], progress=512) is None
    gw.kill()  # SIGKILL: only what was committed survives
    gw.restart()
    c = await camp_of(ctx, gw, n)
    assert [p["released"] for p in c["phases"]] == [True, True, False]
    assert c["counts"] == {"succeeded": 1, "downloading": 1, "offered": 2, "queued": 2}
    # a device that lost its command after the restart gets the same job again
    again = await report(ctx, gw, device=wave1[1])
    assert again[CmdKey.JOB] == got[wave1[1]][CmdKey.JOB]
    await fail(ctx, gw, wave1[2], got[wave1[2]][CmdKey.JOB])  # 1 of 4 released = 25 % >= 20 %
    c = await camp_of(ctx, gw, n)
    assert c["state"] == "paused"
    gw.restart()
    c = await camp_of(ctx, gw, n)
    assert c["state"] == "paused" and "threshold of 20%" in c["reason"]
    code, c = await control(ctx, gw, "POST", f"camp/{n}/resume")
    assert code == "2.04" and c["state"] == "running"


async def test_gateway_wide_download_cap(tmp_path, coap_client):
    from harness import GatewayProc

    ctx = coap_client
    gw = GatewayProc(tmp_path / "capped", extra_args=("--max-downloads", "1")).start()
    try:
        first = await start(ctx, gw, ["g1"], defer=3)
        img = await publish_image(ctx, gw, os.urandom(700), KEY, seq=SEQ, device_class="esp32")
        await report(ctx, gw, device="g2")
        code, second = await control(ctx, gw, "POST", "camp", {"image": img["id"],
                                                               "devices": ["g2"], "defer": 4})
        assert code == "2.01", second
        one = await report(ctx, gw, device="g1")
        assert one[CmdKey.OP] == Op.UPDATE
        assert await report(ctx, gw, device="g2") == {CmdKey.OP: Op.DEFER, CmdKey.WAIT: 4}
        await succeed(ctx, gw, "g1", one[CmdKey.JOB])  # the slot frees
        assert (await report(ctx, gw, device="g2"))[CmdKey.OP] == Op.UPDATE
        assert (await camp_of(ctx, gw, first["id"]))["state"] == "done"
    finally:
        gw.stop()


async def test_stale_offer_frees_its_download_slot(gateway, coap_client):
    ctx, gw = coap_client, gateway
    camp = await start(ctx, gw, ["dead", "live"], max_downloads=1, defer=1, offer_timeout=1)
    first = await report(ctx, gw, device="dead")
    assert first[CmdKey.OP] == Op.UPDATE  # and then it is never heard of again
    assert (await report(ctx, gw, device="live"))[CmdKey.OP] == Op.DEFER
    for _ in range(40):  # the sweeper runs every second
        c = await camp_of(ctx, gw, camp["id"])
        if c["counts"] == {"queued": 2}:
            break
        await asyncio.sleep(0.1)
    assert c["counts"] == {"queued": 2}
    assert (await report(ctx, gw, device="live"))[CmdKey.OP] == Op.UPDATE
    code, events = await control(ctx, gw, "GET", "ev", query="since=0")
    assert any("offer expired" in e["detail"] for e in events)
