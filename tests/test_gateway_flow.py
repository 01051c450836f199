"""A scripted device (plain aiocoap client) through a whole campaign against a real gateway."""

from __future__ import annotations

import asyncio
import hashlib
import os

import cbor2
from aiocoap import GET, POST, Message
from aiocoap.optiontypes import BlockOption
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import control, publish_image

from proto.codes import Op, Result, State
from proto.keys import CmdKey, ReportKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gateway test key").digest())


async def report(ctx, gw, device="dev-1", cls="esp32", seq=1, state=State.IDLE,
                 result=Result.INITIAL, **extra):
    m = {ReportKey.ID: device, ReportKey.CLASS: cls, ReportKey.SEQ: seq, ReportKey.STATE: state,
         ReportKey.RESULT: result}
    m.update({ReportKey[k.upper()]: v for k, v in extra.items()})
    resp = await ctx.request(Message(code=POST, uri=f"{gw.device_uri}/r",
                                     payload=cbor2.dumps(m))).response
    assert resp.code.dotted == "2.04", (resp.code, resp.payload)
    return cbor2.loads(resp.payload) if resp.payload else None


async def fetch(ctx, uri: str, szx: int, window: int = 8) -> bytes:
    """Our own Block2 loop over aiocoap's client: block 0 gives Size2, then ``window``
    block requests in flight at a time (any block, any order: the server keeps no state)."""

    async def block(num: int) -> Message:
        req = Message(code=GET, uri=uri, block2=BlockOption.BlockwiseTuple(num, False, szx))
        resp = await ctx.request(req, handle_blockwise=False).response
        assert resp.code.dotted == "2.05", (num, resp.code, resp.payload)
        assert resp.opt.block2.block_number == num and resp.opt.block2.size_exponent == szx
        return resp

    first = await block(0)
    size, bsize = first.opt.size2, 1 << (szx + 4)
    count = max(1, -(-size // bsize))
    parts = [first.payload]
    for start in range(1, count, window):
        got = await asyncio.gather(*(block(n) for n in range(start, min(start + window, count))))
        parts += [r.payload for r in got]
    assert not got[-1].opt.block2.more if count > 1 else not first.opt.block2.more
    return b"".join(parts)


async def test_device_updates_through_a_campaign(gateway, coap_client):
    ctx, gw = coap_client, gateway
    image = os.urandom(20_000)
    img = await publish_image(ctx, gw, image, KEY, seq=2, device_class="esp32")
    assert await report(ctx, gw) is None  # registers, nothing to do yet
    code, camp = await control(ctx, gw, "POST", "camp", {"image": img["id"], "devices": ["dev-1"]})
    assert code == "2.01" and camp["counts"] == {"queued": 1}

    cmd = await report(ctx, gw)
    assert cmd[CmdKey.OP] == Op.UPDATE and isinstance(cmd[CmdKey.MANIFEST], bytes)
    job = cmd[CmdKey.JOB]
    # a device that forgets the command gets it again; the job is not duplicated
    assert (await report(ctx, gw))[CmdKey.JOB] == job

    got = await fetch(ctx, gw.device_uri + img["uri"], szx=6)
    assert hashlib.sha256(got).hexdigest() == img["digest"]
    for state, progress in ((State.DOWNLOADING, 4096), (State.DOWNLOADED, len(image)),
                            (State.UPDATING, len(image))):
        assert await report(ctx, gw, state=state, job=job, progress=progress,
                            size=len(image), target=2) is None
        code, c = await control(ctx, gw, "GET", "camp/1")
        assert c["jobs"][0]["state"] == State(state).name.lower()
    assert await report(ctx, gw, seq=2, result=Result.SUCCESS, job=job) is None

    code, c = await control(ctx, gw, "GET", f"camp/{camp['id']}")
    assert code == "2.05"
    assert c["state"] == "done" and c["jobs"][0]["state"] == "succeeded"
    code, dev = await control(ctx, gw, "GET", "dev/dev-1")
    assert dev["seq"] == 2 and dev["state"] == "idle" and dev["result"] == "success"
    kinds = [e["kind"] for e in dev["events"]]
    assert kinds.count("job") == 5 and "registered" in kinds  # offered..succeeded, nothing silent
    code, events = await control(ctx, gw, "GET", "ev", query="since=0")
    assert any(e["detail"].startswith(f"campaign {camp['id']}: running -> done") for e in events)
