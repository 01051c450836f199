"""Job lifecycle edges against a real gateway: timeouts, late reports, cancel, defer, failure,
already-current devices, observers, campaign refusals."""

from __future__ import annotations

import asyncio
import hashlib
import os

import cbor2
from aiocoap import GET, Message
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import control, publish_image
from test_gateway_flow import report

from proto.codes import Op, Result, State
from proto.keys import CmdKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gateway jobs key").digest())


async def setup_campaign(ctx, gw, devices=("a",), timeout=3600, seq=3):
    img = await publish_image(ctx, gw, os.urandom(3000), KEY, seq=seq, device_class="esp32")
    for d in devices:
        await report(ctx, gw, device=d)
    code, camp = await control(ctx, gw, "POST", "camp",
                               {"image": img["id"], "devices": list(devices), "timeout": timeout})
    assert code == "2.01", camp
    return img, camp


async def job_state(ctx, gw, n, device):
    code, c = await control(ctx, gw, "GET", f"camp/{n}")
    return next(j for j in c["jobs"] if j["device"] == device), c


async def test_timed_out_then_late_success_is_reconciled(gateway, coap_client):
    ctx, gw = coap_client, gateway
    img, camp = await setup_campaign(ctx, gw, timeout=1)
    job = (await report(ctx, gw, device="a"))[CmdKey.JOB]
    for _ in range(50):  # the sweeper runs every second
        j, c = await job_state(ctx, gw, camp["id"], "a")
        if j["state"] == "timed_out":
            break
        await asyncio.sleep(0.1)
    assert j["state"] == "timed_out" and c["state"] == "done"
    assert await report(ctx, gw, device="a") is None  # not offered again
    assert await report(ctx, gw, device="a", state=State.UPDATING, job=job) is None
    assert (await job_state(ctx, gw, camp["id"], "a"))[0]["state"] == "timed_out"
    assert await report(ctx, gw, device="a", seq=3, result=Result.SUCCESS, job=job) is None
    j, c = await job_state(ctx, gw, camp["id"], "a")
    assert j["state"] == "succeeded" and c["total"] == 1 and c["counts"] == {"succeeded": 1}
    code, events = await control(ctx, gw, "GET", "ev", query="since=0")
    assert any(e["kind"] == "late report" and "timed_out -> succeeded" in e["detail"]
               for e in events)


async def test_a_device_still_downloading_a_timed_out_job_is_told_to_stop(gateway, coap_client):
    ctx, gw = coap_client, gateway
    img, camp = await setup_campaign(ctx, gw, timeout=1)
    job = (await report(ctx, gw, device="a"))[CmdKey.JOB]
    assert await report(ctx, gw, device="a", state=State.DOWNLOADING, job=job) is None
    for _ in range(50):  # the sweeper runs every second
        j, c = await job_state(ctx, gw, camp["id"], "a")
        if j["state"] == "timed_out":
            break
        await asyncio.sleep(0.1)
    assert j["state"] == "timed_out"
    for state in (State.DOWNLOADING, State.DOWNLOADED):  # at its next exchange: stop
        cmd = await report(ctx, gw, device="a", state=state, job=job)
        assert cmd == {CmdKey.OP: Op.CANCEL, CmdKey.JOB: job}
    # the device obeys and says so: the job stays timed out (not failed)
    assert await report(ctx, gw, device="a", result=Result.CANCELLED, job=job) is None
    assert (await job_state(ctx, gw, camp["id"], "a"))[0]["state"] == "timed_out"


async def test_cancel_defer_fail_and_already_current(gateway, coap_client):
    ctx, gw = coap_client, gateway
    img, camp = await setup_campaign(ctx, gw, devices=("a", "b", "c", "d"))
    jobs = {d: (await report(ctx, gw, device=d))[CmdKey.JOB] for d in "abc"}
    # a: defers itself -> queued again, told to come back after the campaign's defer delay
    cmd = await report(ctx, gw, device="a", result=Result.DEFERRED, job=jobs["a"])
    assert cmd[CmdKey.OP] == Op.DEFER and 55 <= cmd[CmdKey.WAIT] <= 60
    j = (await job_state(ctx, gw, camp["id"], "a"))[0]
    assert (j["state"], j["result"]) == ("queued", "deferred")
    # b: fails verification
    assert await report(ctx, gw, device="b", result=Result.SIGNATURE_INVALID, job=jobs["b"]) is None
    j = (await job_state(ctx, gw, camp["id"], "b"))[0]
    assert j["state"] == "failed" and j["result"] == "signature_invalid"
    # d: already runs seq 3 when the command would be handed out: skipped, not an update
    assert await report(ctx, gw, device="d", seq=3) is None
    assert (await job_state(ctx, gw, camp["id"], "d"))[0]["state"] == "skipped"
    # c: downloading, then the campaign is cancelled -> CANCEL for c, a's job cancelled too
    assert await report(ctx, gw, device="c", state=State.DOWNLOADING, job=jobs["c"],
                        progress=1024) is None
    code, c = await control(ctx, gw, "POST", f"camp/{camp['id']}/cancel")
    assert code == "2.04" and c["state"] == "cancelled"
    assert c["counts"] == {"cancelled": 2, "failed": 1, "skipped": 1}
    cmd = await report(ctx, gw, device="c", state=State.DOWNLOADING, job=jobs["c"], progress=2048)
    assert cmd == {CmdKey.OP: Op.CANCEL, CmdKey.JOB: jobs["c"]}
    assert await report(ctx, gw, device="c", result=Result.CANCELLED, job=jobs["c"]) is None
    assert (await job_state(ctx, gw, camp["id"], "c"))[0]["state"] == "cancelled"
    # a device that had the whole image before it heard of the cancel installs it: the record
    # follows the device (a late success), while a late failure leaves the job cancelled
    assert await report(ctx, gw, device="a", result=Result.INTEGRITY_FAILURE, job=jobs["a"]) is None
    assert (await job_state(ctx, gw, camp["id"], "a"))[0]["state"] == "cancelled"
    assert await report(ctx, gw, device="c", seq=3, result=Result.SUCCESS, job=jobs["c"]) is None
    j, c = await job_state(ctx, gw, camp["id"], "c")
    assert j["state"] == "succeeded" and c["state"] == "cancelled"
    code, events = await control(ctx, gw, "GET", "ev", query="since=0")
    assert any("already running seq 3" in e["detail"] for e in events)
    assert any(e["kind"] == "late report" and "cancelled -> succeeded" in e["detail"]
               for e in events)


async def test_campaign_refusals(gateway, coap_client):
    ctx, gw = coap_client, gateway
    img, camp = await setup_campaign(ctx, gw, devices=("a",))
    await report(ctx, gw, device="other", cls="stm32")
    for body, expect in [
        ({"image": "ffffffff", "devices": ["a"]}, "4.04"),
        ({"image": img["id"], "devices": ["nobody"]}, "4.04"),
        ({"image": img["id"], "devices": ["other"]}, "4.00"),  # class mismatch
        ({"image": img["id"], "all": True}, "4.00"),  # includes the stm32 device
        ({"image": img["id"], "class": "esp32"}, "4.00"),  # a is busy in campaign 1
        ({"image": img["id"]}, "4.00"),
        ({"image": img["id"], "devices": ["a"], "timeout": -1}, "4.00"),
    ]:
        code, text = await control(ctx, gw, "POST", "camp", body)
        assert code == expect, (body, text)
    code, camps = await control(ctx, gw, "GET", "camp")
    assert [c["id"] for c in camps] == [camp["id"]]


async def test_command_resource_is_observable(gateway, coap_client):
    ctx, gw = coap_client, gateway
    await report(ctx, gw, device="m")
    req = ctx.request(Message(code=GET, uri=f"{gw.device_uri}/c/m", observe=0))
    first = await req.response
    assert first.code.dotted == "2.05" and first.payload == b""
    notes = req.observation.__aiter__()
    img = await publish_image(ctx, gw, os.urandom(1000), KEY, seq=9, device_class="esp32")
    code, camp = await control(ctx, gw, "POST", "camp", {"image": img["id"], "devices": ["m"]})
    note = await asyncio.wait_for(notes.__anext__(), 5)
    cmd = cbor2.loads(note.payload)
    assert cmd[CmdKey.OP] == Op.UPDATE and len(note.payload) < 1024
    await control(ctx, gw, "POST", f"camp/{camp['id']}/cancel")
    note = await asyncio.wait_for(notes.__anext__(), 5)
    assert note.payload == b""  # the device never started: nothing to cancel
    req.observation.cancel()


async def test_address_changes_are_events_but_new_ports_are_not(gateway, coap_client):
    import socket

    def raw_report(source_ip: str, mid: int) -> str:
        m = Message(code=2, uri_path=("r",), payload=cbor2.dumps(
            {1: "nomad", 2: "esp32", 3: 1, 4: 0, 5: 0}))
        m.mtype, m.mid, m.token = 0, mid, b"\x07"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source_ip, 0))
            s.settimeout(5)
            s.sendto(m.encode(), ("127.0.0.1", gateway.device_port))
            return Message.decode(s.recvfrom(2048)[0]).code.dotted

    assert raw_report("127.0.0.1", 1) == "2.04"
    assert raw_report("127.0.0.1", 2) == "2.04"  # another source port
    assert raw_report("127.0.0.2", 3) == "2.04"  # another address
    code, dev = await control(coap_client, gateway, "GET", "dev/nomad")
    moves = [e for e in dev["events"] if e["kind"] == "address"]
    assert len(moves) == 1 and "127.0.0.2:" in moves[0]["detail"]
    assert dev["address"].startswith("127.0.0.2:")
