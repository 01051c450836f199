"""cc's campaign commands against the real gateway: tags, phased upgrade, the automatic pause,
status --watch stopping on it, resume/retry/pause, events --since."""

from __future__ import annotations

import asyncio
import json
import time

from test_cc_gateway import CLASS, add_image, cc, cc_json, error_line, home, report  # noqa: F401

from proto.codes import Op, Result, State
from proto.keys import CmdKey


async def wake(ctx, gw, device: str, seq: int = 1, **fields):
    return await report(ctx, gw, id=device, **{"class": CLASS}, seq=seq,
                        state=fields.pop("state", State.IDLE),
                        result=fields.pop("result", Result.INITIAL), **fields)


async def test_tags_phased_upgrade_pause_resume_retry(gateway, home, tmp_path, coap_client):
    gw, ctx = gateway, coap_client
    run = asyncio.to_thread
    for i in range(6):
        assert (await run(cc, gw, home, "devices", "add", f"d{i}", "--class", CLASS)).returncode == 0
    dev = await run(cc_json, gw, home, "devices", "tag", "d5", "lab", "roof")
    assert dev["tags"] == ["lab", "roof"]
    dev = await run(cc_json, gw, home, "devices", "tag", "d5", "roof", "--remove")
    assert dev["tags"] == ["lab"]
    image = await run(add_image, gw, home, tmp_path, b"phased" * 300, 4)
    by_tag = await run(cc_json, gw, home, "upgrade", image["id"], "--tag", "lab")
    assert by_tag["total"] == 1
    await run(cc, gw, home, "cancel", str(by_tag["id"]))

    camp = await run(cc_json, gw, home, "upgrade", image["id"], "--class", CLASS, "--canary", "1",
                     "--wave", "50%", "--max-failures", "1", "--max-downloads", "4")
    n = camp["id"]
    assert [p["total"] for p in camp["phases"]] == [1, 3, 2]
    assert camp["policy"] == {"canary": 1, "wave": "50%", "max_failures": "1",
                              "max_downloads": 4, "success_rate": 100.0, "defer": 60,
                              "offer_timeout": 600}
    people = await run(cc, gw, home, "status", str(n))
    assert "canary" in people.stdout and "wave 2" in people.stdout and "max failures 1" in people.stdout
    cmds = {f"d{i}": await wake(ctx, gw, f"d{i}") for i in range(6)}
    [canary] = [d for d, c in cmds.items() if c.get(CmdKey.OP) == Op.UPDATE]
    await wake(ctx, gw, canary, result=Result.ROLLED_BACK, job=cmds[canary][CmdKey.JOB])
    # paused by itself: status --watch returns at once (nothing in flight), exit 1
    watched = await run(cc, gw, home, "status", str(n), "--watch")
    assert watched.returncode == 1
    assert "paused" in watched.stdout and "threshold of 1" in watched.stdout
    assert "rolled_back" in watched.stdout and canary in watched.stdout
    assert "cc resume" in watched.stdout
    line = error_line(await run(cc, gw, home, "pause", str(n)))
    assert "4.09" in line and "not running" in line
    # retry: the canary gets a new job and succeeds; wave 1 is released
    retried = await run(cc_json, gw, home, "retry", str(n))
    assert retried["state"] == "running"
    cmd = await wake(ctx, gw, canary)
    assert cmd[CmdKey.OP] == Op.UPDATE and cmd[CmdKey.JOB] != cmds[canary][CmdKey.JOB]
    await wake(ctx, gw, canary, seq=4, result=Result.SUCCESS, job=cmd[CmdKey.JOB])
    status = await run(cc_json, gw, home, "status", str(n))
    assert [p["released"] for p in status["phases"]] == [True, True, False]
    paused = await run(cc_json, gw, home, "pause", str(n))
    assert paused["state"] == "paused" and paused["reason"] == "paused by the operator"
    others = [d for d in cmds if d != canary]
    assert [await wake(ctx, gw, d) for d in others] == [{}] * 5  # paused: nothing offered
    resumed = await run(cc_json, gw, home, "resume", str(n))
    assert resumed["state"] == "running"
    offered = [d for d in others if (await wake(ctx, gw, d)).get(CmdKey.OP) == Op.UPDATE]
    assert len(offered) == 3
    log = await run(cc_json, gw, home, "events", "--since", "10m")
    details = [e["detail"] for e in log if e["campaign"] == n]
    assert any("paused by the operator" in d for d in details)
    assert any("wave 1 released" in d for d in details)
    assert await run(cc_json, gw, home, "events", "--since", "2999-01-01T00:00Z") == []
    people = await run(cc, gw, home, "cancel", str(n))
    assert people.returncode == 0 and "cancelled" in people.stdout
    assert json.loads((await run(cc, gw, home, "status", "--json")).stdout)[-1]["state"] == \
        "cancelled"


async def test_events_export_pages_through_everything(gateway, home, coap_client):
    """More events than one page (1000): `cc events --json` returns all of them, once each."""
    from harness import control

    gw = gateway
    assert (await asyncio.to_thread(cc, gw, home, "devices", "add", "busy", "--class",
                                    CLASS)).returncode == 0
    t0 = time.time()

    async def toggle(i: int) -> None:
        body = {"add": ["x"]} if i % 2 == 0 else {"remove": ["x"]}
        code, _ = await control(coap_client, gw, "POST", "dev/busy/tags", body)
        assert code == "2.04"

    for i in range(1030):  # in order: each one changes the tags, so each is an event
        await toggle(i)
    rows = await asyncio.to_thread(cc_json, gw, home, "events", "--since", f"{t0 - 1:.3f}")
    ids = [e["id"] for e in rows]
    assert len(ids) == len(set(ids)) == 1031 and ids == sorted(ids)
    assert sum(e["kind"] == "tags" for e in rows) == 1030
