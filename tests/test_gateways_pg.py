"""Two gateway processes on one PostgreSQL database: devices change gateway between any two
requests (mid-download) and still succeed; a --max-downloads cap holds over both gateways
(checked from the event log); SIGKILL of one gateway mid-campaign loses nothing, the other
finishes it. Also the firmware uploaded through one gateway is served by the other (shared
through the database, re-verified by digest), and an observer on one gateway hears of a change
made on the other (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import GatewayProc, control, publish_image

from sim import fleetsim

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"two gateways key").digest())
N = 24
CAP = 3
JOB = re.compile(r"^job (\d+): (\w+) -> (\w+)")


def most_downloading(url: str) -> int:
    """The largest number of jobs holding a download slot (offered or downloading) at once,
    replayed from the event log in commit order."""
    holding: set[int] = set()
    most = 0
    with psycopg.connect(url) as db:
        for (detail,) in db.execute("SELECT detail FROM events WHERE kind='job' ORDER BY id"):
            m = JOB.match(detail)
            if m is None:
                continue
            job, new = int(m.group(1)), m.group(3)
            if new in ("offered", "downloading"):
                holding.add(job)
            else:
                holding.discard(job)
            most = max(most, len(holding))
    return most


async def test_two_gateways_share_one_database(pg_url, tmp_path, coap_client):
    extra = ("--store", pg_url, "--max-downloads", str(CAP))
    a = GatewayProc(tmp_path / "a", extra).start()
    b = GatewayProc(tmp_path / "b", extra).start()
    try:
        img = await publish_image(coap_client, a, os.urandom(4 * 1024 + 100), KEY, seq=2,
                                  device_class="pg")  # 5 blocks, uploaded through a only
        args = fleetsim.parser().parse_args([
            "--gateway", a.device_uri, "--gateway", b.device_uri, "--alternate",
            "-n", str(N), "--class", "pg", "--until-seq", "2", "--wake", "0.3",
            "--spread", "0.5", "--reboot", "0.2", "--reboot-delay", "0.2",
            "--ack-timeout", "0.3", "--retransmits", "1", "--duration", "90", "--seed", "3",
            "--every", "0.05", "--sockets", str(N)])  # a source per device, as in the field

        async def operate(fleet_box: list) -> None:
            for _ in range(300):  # bounded: devices register within --spread
                code, rows = await control(coap_client, b, "GET", "dev")
                if len(rows) == N:
                    break
                await asyncio.sleep(0.1)
            # started through b: the image was registered through a
            code, body = await control(coap_client, b, "POST", "camp",
                                       {"image": img["id"], "class": "pg", "timeout": 300,
                                        "defer": 1})
            assert code == "2.01", body
            for _ in range(600):  # kill a once some devices are mid-download
                if fleet_box and fleet_box[0].stats.blocks >= 2 * N:
                    break
                await asyncio.sleep(0.05)
            a.kill()

        box: list = []
        operator = asyncio.ensure_future(operate(box))
        fleet = await fleetsim.run(args, lambda f, t: box.append(f) if not box else None)
        await operator
        assert not a.alive()
        s = fleet.stats
        assert fleet.done == N, (fleetsim.summary(fleet, 0), a.log_text()[-3000:],
                                 b.log_text()[-3000:])  # every device runs seq 2
        assert s.defers > 0  # the cap was reached and held devices back
        code, camp = await control(coap_client, b, "GET", "camp/1")
        assert camp["state"] == "done" and camp["counts"] == {"succeeded": N}
        assert most_downloading(pg_url) <= CAP
        with psycopg.connect(pg_url) as db:
            assert db.execute("SELECT COUNT(*) FROM devices WHERE seq=2").fetchone()[0] == N
    finally:
        for gw in (a, b):
            if gw.alive():
                gw.stop()


async def test_observe_hears_changes_made_on_another_gateway(pg_url, tmp_path, coap_client):
    """A device observes its command on gateway b; the campaign is started on gateway a: b
    learns it through the database (LISTEN/NOTIFY) and notifies the device."""
    import cbor2
    from aiocoap import GET, POST, Message

    from proto.codes import Op
    from proto.keys import CmdKey, ReportKey

    a = GatewayProc(tmp_path / "a", ("--store", pg_url)).start()
    b = GatewayProc(tmp_path / "b", ("--store", pg_url)).start()
    try:
        img = await publish_image(coap_client, a, os.urandom(1500), KEY, seq=2,
                                  device_class="pg")
        report = {ReportKey.ID: "mains-1", ReportKey.CLASS: "pg", ReportKey.SEQ: 1,
                  ReportKey.STATE: 0, ReportKey.RESULT: 0}
        resp = await coap_client.request(Message(code=POST, uri=f"{b.device_uri}/r",
                                                 payload=cbor2.dumps(report))).response
        assert resp.code.dotted == "2.04"
        req = coap_client.request(Message(code=GET, uri=f"{b.device_uri}/c/mains-1",
                                          observe=0))
        first = await req.response
        assert first.code.dotted == "2.05" and first.payload == b""  # nothing to do yet
        code, body = await control(coap_client, a, "POST", "camp",
                                   {"image": img["id"], "devices": ["mains-1"]})
        assert code == "2.01", body
        note = await asyncio.wait_for(req.observation.__aiter__().__anext__(), 10)
        cmd = cbor2.loads(note.payload)
        assert cmd[CmdKey.OP] == Op.UPDATE and cmd[CmdKey.JOB] == 1  # the campaign's one job
        req.observation.cancel()
    finally:
        for gw in (a, b):
            gw.stop()
