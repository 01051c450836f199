"""Bad input gets a clear 4.xx and the gateway lives on; startup refuses what it must."""

from __future__ import annotations

import hashlib
import os
import socket

import cbor2
import pytest
from aiocoap import GET, POST, PUT, Message
from harness import GatewayProc, control, free_udp_port, run_gateway_once

from proto.control import MAX_BODY, MAX_IMAGE, MAX_REPORT
from proto.keys import ReportKey

GOOD = {ReportKey.ID: "d", ReportKey.CLASS: "c", ReportKey.SEQ: 1, ReportKey.STATE: 0,
        ReportKey.RESULT: 0}


async def post(ctx, uri: str, payload: bytes, code=POST) -> Message:
    return await ctx.request(Message(code=code, uri=uri, payload=payload)).response


BAD_REPORTS = [
    (b"\xff\x00garbage", "4.00"),
    (cbor2.dumps(GOOD) + b"\x00", "4.00"),  # trailing bytes
    (b"", "4.00"),
    (cbor2.dumps([1, 2, 3]), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.ID: 5}), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.SEQ: -1}), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.SEQ: True}), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.STATE: 99}), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.JOB: "7"}), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.ID: "x" * 65}), "4.00"),
    (cbor2.dumps({ReportKey.ID: "d"}), "4.00"),
    (cbor2.dumps({**GOOD, ReportKey.AUTH: b"x" * (MAX_REPORT + 1)}), "4.13"),
]


async def test_bad_reports_are_refused(gateway, coap_client):
    for payload, expect in BAD_REPORTS:
        resp = await post(coap_client, f"{gateway.device_uri}/r", payload)
        assert resp.code.dotted == expect, (payload, resp.payload)
        assert resp.payload, "an error carries a diagnostic"
        ok = await post(coap_client, f"{gateway.device_uri}/r", cbor2.dumps(GOOD))
        assert ok.code.dotted == "2.04"
    assert "Traceback" not in gateway.log_text()


async def test_unknown_paths_and_methods(gateway, coap_client):
    ctx, gw = coap_client, gateway
    for uri, method, expect in [
        (f"{gw.device_uri}/nope", GET, "4.04"),
        (f"{gw.device_uri}/r", GET, "4.05"),
        (f"{gw.device_uri}/f", GET, "4.04"),
        (f"{gw.device_uri}/f/abc/def", GET, "4.04"),
        (f"{gw.device_uri}/c/nobody", GET, "4.04"),
        (f"{gw.control_uri}/nope", GET, "4.04"),
        (f"{gw.control_uri}/camp/xyz", GET, "4.04"),
        (f"{gw.control_uri}/camp/99", GET, "4.04"),
        (f"{gw.control_uri}/dev/nobody", GET, "4.04"),
        (f"{gw.control_uri}/fw", PUT, "4.05"),
        (f"{gw.control_uri}/blob/../../etc/passwd", PUT, "4.04"),
        (f"{gw.control_uri}/blob/{'g' * 64}", PUT, "4.00"),
    ]:
        resp = await ctx.request(Message(code=method, uri=uri, payload=b"x")).response
        assert resp.code.dotted == expect, (uri, resp.code, resp.payload)
    for path, body in [("fw", b"\x81"), ("camp", cbor2.dumps([1])), ("dev", cbor2.dumps({"id": 3})),
                       ("fw", cbor2.dumps({"manifest": b"junk", "class": "c", "vendor": "v"}))]:
        resp = await post(ctx, f"{gw.control_uri}/{path}", body)
        assert resp.code.dotted == "4.00", (path, resp.payload)
    resp = await post(ctx, f"{gw.control_uri}/dev", cbor2.dumps({"id": "d", "pad": "x" * MAX_BODY}))
    assert resp.code.dotted == "4.13" and resp.opt.size1 == MAX_BODY
    code, _ = await control(ctx, gw, "GET", "dev")
    assert code == "2.05" and gateway.alive()


async def test_datagram_garbage_does_not_kill_it(gateway, coap_client):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\x00", b"\x40\x01", os.urandom(300), b"\x44\x01\x00\x01" + b"\xff" * 60):
            s.sendto(junk, ("127.0.0.1", gateway.device_port))
    resp = await post(coap_client, f"{gateway.device_uri}/r", cbor2.dumps(GOOD))
    assert resp.code.dotted == "2.04" and gateway.alive()


async def test_uploads_are_checked(gateway, coap_client):
    ctx, gw = coap_client, gateway
    data = os.urandom(5000)
    wrong = hashlib.sha256(b"other").hexdigest()
    resp = await post(ctx, f"{gw.control_uri}/blob/{wrong}", data, code=PUT)
    assert resp.code.dotted == "4.00"
    assert not (gw.data / "blobs" / wrong).exists()
    assert list((gw.data / "blobs" / "tmp").iterdir()) == []
    # announced too large (Size1) and actually too large
    big = Message(code=PUT, uri=f"{gw.control_uri}/blob/{wrong}", payload=b"x" * 64)
    big.opt.size1 = MAX_IMAGE + 1
    resp = await ctx.request(big, handle_blockwise=False).response
    assert resp.code.dotted == "4.13" and resp.opt.size1 == MAX_IMAGE
    # a block that does not follow the previous one
    from aiocoap.optiontypes import BlockOption

    first = Message(code=PUT, uri=f"{gw.control_uri}/blob/{wrong}", payload=b"x" * 1024,
                    block1=BlockOption.BlockwiseTuple(0, True, 6))
    assert (await ctx.request(first, handle_blockwise=False).response).code.dotted == "2.31"
    gap = Message(code=PUT, uri=f"{gw.control_uri}/blob/{wrong}", payload=b"x" * 1024,
                  block1=BlockOption.BlockwiseTuple(2, True, 6))
    assert (await ctx.request(gap, handle_blockwise=False).response).code.dotted == "4.08"
    assert list((gw.data / "blobs" / "tmp").iterdir()) == []


async def test_enrolled_only(tmp_path, coap_client):
    gw = GatewayProc(tmp_path / "data", ["--enrolled-only"]).start()
    try:
        resp = await post(coap_client, f"{gw.device_uri}/r", cbor2.dumps(GOOD))
        assert resp.code.dotted == "4.03" and b"unknown device" in resp.payload
        code, dev = await control(coap_client, gw, "POST", "dev", {"id": "d", "class": "c"})
        assert code == "2.01" and dev["enrolled"] is True
        resp = await post(coap_client, f"{gw.device_uri}/r", cbor2.dumps(GOOD))
        assert resp.code.dotted == "2.04"
    finally:
        assert gw.stop() == 0


def test_second_gateway_on_same_port_refused(gateway, tmp_path):
    code, out = run_gateway_once(["run", "--bind", f"127.0.0.1:{gateway.device_port}",
                                  "--control-bind", f"127.0.0.1:{free_udp_port()}",
                                  "--data", str(tmp_path / "other")])
    assert code == 2, out
    assert "cannot bind the device port" in out and "in use" in out
    code, out = run_gateway_once(["run", "--bind", f"127.0.0.1:{free_udp_port()}",
                                  "--control-bind", f"127.0.0.1:{gateway.control_port}",
                                  "--data", str(tmp_path / "other")])
    assert code == 2 and "cannot bind the control port" in out, out
    assert gateway.alive()


def test_non_loopback_control_bind_refused(tmp_path):
    for bind in ("0.0.0.0:5684", "[::]:5684", "192.0.2.1:5684"):
        code, out = run_gateway_once(["run", "--bind", f"127.0.0.1:{free_udp_port()}",
                                      "--control-bind", bind, "--data", str(tmp_path / "d")])
        assert code == 2, out
        assert "bind it to loopback, or require OSCORE with --oscore" in out


def test_bad_bind_syntax_refused(tmp_path):
    code, out = run_gateway_once(["run", "--bind", "nonsense", "--data", str(tmp_path / "d")])
    assert code == 2 and "--bind" in out


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signals_shut_down_cleanly(tmp_path, sig):
    import signal

    gw = GatewayProc(tmp_path / "data").start()
    assert gw.proc is not None
    gw.proc.send_signal(getattr(signal, sig))
    assert gw.proc.wait(timeout=10) == 0
    assert "shutting down" in gw.log_text()


def test_json_log_lines(tmp_path):
    import json

    gw = GatewayProc(tmp_path / "data", ["--log-json"]).start()
    assert gw.stop() == 0
    lines = [json.loads(line) for line in gw.log_text().splitlines() if line.strip()]
    assert any(line.get("event") == "ready" for line in lines)


def test_newer_schema_refused(tmp_path):
    import sqlite3

    data = tmp_path / "d"
    data.mkdir()
    db = sqlite3.connect(data / "gateway.sqlite3")
    db.execute("PRAGMA user_version=999")
    db.close()
    code, out = run_gateway_once(["run", "--bind", f"127.0.0.1:{free_udp_port()}",
                                  "--control-bind", f"127.0.0.1:{free_udp_port()}",
                                  "--data", str(data)])
    assert code == 2 and "newer than this gateway" in out, out


async def test_long_listings_come_blockwise(gateway, coap_client):
    for n in range(40):
        msg = {**GOOD, ReportKey.ID: f"device-with-a-long-name-{n:03d}"}
        assert (await post(coap_client, f"{gateway.device_uri}/r", cbor2.dumps(msg))).code.dotted == "2.04"
    code, devices = await control(coap_client, gateway, "GET", "dev")
    assert code == "2.05" and len(devices) == 40 and len(cbor2.dumps(devices)) > 4096
    code, events = await control(coap_client, gateway, "GET", "ev", query="since=0")
    assert code == "2.05" and len(events) == 40
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # on the wire: one block at a time, never an oversized datagram
    from test_gateway_blocks import raw_get

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        r = raw_get(s, gateway.control_port, "dev", 1)
    assert r.code.dotted == "2.05" and len(r.payload) == 1024 and r.opt.block2.more


async def test_control_bodies_over_one_block_are_reassembled(gateway, coap_client):
    tags = [f"tag-{n:04d}" for n in range(150)]  # ~1.4 KiB of CBOR: aiocoap sends Block1
    code, dev = await control(coap_client, gateway, "POST", "dev",
                              {"id": "tagged", "class": "c", "tags": tags})
    assert code == "2.01" and dev["tags"] == tags
