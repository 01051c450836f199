"""Hostile input to the gateway: a sample of ``bench/fuzz.py`` (generated datagrams to every
resource of both binds), CBOR bombs with their reasons, the per-host rate limit (the limiter itself: test_gateway_limits.py), the CBOR
checks, and the device's manifest check on random input (its CBOR and CoAP decoders are fuzzed
in test_device_cbor.py and test_device_coap.py)."""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path

import cbor2
import pytest
from aiocoap import POST, Message
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import fuzz  # noqa: E402
from harness import GatewayProc, control  # noqa: E402

from device import const as dconst  # noqa: E402
from device import manifest as dmanifest  # noqa: E402
from gateway.cborcheck import Unacceptable, check_plain  # noqa: E402
from proto.keys import ReportKey  # noqa: E402

GOOD = {ReportKey.ID: "d", ReportKey.CLASS: "c", ReportKey.SEQ: 1, ReportKey.STATE: 0,
        ReportKey.RESULT: 0}


def test_fuzz_sample_every_resource(tmp_path: Path) -> None:
    """150 generated datagrams per resource (11 resources, both binds): the gateway answers a
    valid request every 25 datagrams, logs no traceback, stops cleanly, and the enrolled
    device, image, campaign, jobs and event count are exactly as before."""
    stats = fuzz.run(150, seed_value=7, data=tmp_path / "data", log=lambda line: None, pool=60)
    assert stats.sent == 150 * 11
    assert stats.probes >= 11 * 6
    assert len(stats.per_resource) == 11


BOMBS = [
    (b"\x81" * 300 + b"\x00", "nested deeper"),  # within cbor2's 400, past our 16
    (b"\x81" * 500 + b"\x00", "not CBOR"),  # past cbor2's own limit
    (b"\xa1\x00" * 40 + b"\x00", "nested deeper"),
    (b"\x5b" + struct.pack(">Q", 2**64 - 1), "not CBOR"),  # declares 2^64 bytes
    (b"\x9b" + struct.pack(">Q", 2**63), "not CBOR"),  # declares 2^63 items
    (b"\x9f" * 100, "not CBOR"),  # never closed
    (bytes.fromhex("d81c81d81d00"), "nested deeper"),  # a list that contains itself
    (cbor2.dumps(cbor2.CBORTag(35, "(a*)*b")), "unsupported CBOR item"),  # compiled regex
    (cbor2.dumps({ReportKey.ID: cbor2.CBORTag(1, 0)}), "unsupported CBOR item"),  # a datetime
]


async def test_cbor_bombs_refused_with_reason(gateway, coap_client) -> None:
    before = gateway.row_counts()
    for payload, reason in BOMBS:
        for uri in (f"{gateway.device_uri}/r", f"{gateway.control_uri}/dev",
                    f"{gateway.control_uri}/camp"):
            resp = await coap_client.request(Message(code=POST, uri=uri, payload=payload)).response
            assert resp.code.dotted == "4.00", (uri, payload[:8], resp.payload)
            assert reason in resp.payload.decode(), (uri, resp.payload)
    assert gateway.row_counts() == before
    ok = await coap_client.request(Message(code=POST, uri=f"{gateway.device_uri}/r",
                                           payload=cbor2.dumps(GOOD))).response
    assert ok.code.dotted == "2.04"
    assert "Traceback" not in gateway.log_text()


def test_check_plain() -> None:
    check_plain({1: [b"x", "y", None, True, 1.5, {"k": [1]}]})
    for bad, why in [({(1, 2): 1}, "keys"), ([[[[]]]], "deeper"), (set(), "unsupported"),
                     (list(range(5000)), "items")]:
        with pytest.raises(Unacceptable, match=why):
            check_plain(bad, max_depth=3)
    loop: list = []
    loop.append(loop)
    with pytest.raises(Unacceptable, match="deeper"):
        check_plain(loop)


async def test_flood_from_one_host_is_dropped(tmp_path: Path, coap_client) -> None:
    """--rate-limit 20 --rate-burst 40 --limit-loopback: of 300 reports sent at once about 40
    (the burst) are answered; a second later the host is served again."""
    gw = GatewayProc(tmp_path / "data", ["--rate-limit", "20", "--rate-burst", "40",
                                         "--limit-loopback"]).start()
    try:
        report = fuzz.encode(fuzz.NON, fuzz.POST, 0, b"", [(fuzz.URI_PATH, b"r")],
                             cbor2.dumps(GOOD))
        answered = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for mid in range(300):
                s.sendto(bytes([0x50, 0x02, mid >> 8, mid & 0xFF]) + report[4:],
                         ("127.0.0.1", gw.device_port))
            try:
                while True:
                    s.recvfrom(2048)
                    answered += 1
            except socket.timeout:
                pass
        assert 20 <= answered <= 60, answered
        assert "rate limit: dropping datagrams from 127.0.0.1" in gw.log_text()
        time.sleep(1.0)
        ok = await coap_client.request(Message(code=POST, uri=f"{gw.device_uri}/r",
                                               payload=cbor2.dumps(GOOD))).response
        assert ok.code.dotted == "2.04"
        code, _ = await control(coap_client, gw, "GET", "dev")  # the control bind is not limited
        assert code == "2.05"
    finally:
        assert gw.stop() == 0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=1100), fuzz.bombs,
                 fuzz.cbor_values.map(lambda v: cbor2.dumps(cbor2.CBORTag(18, v))
                                      if _encodable(v) else b"")))
def test_device_manifest_check_only_refuses(data: bytes) -> None:
    """Whatever arrives as a manifest, the device answers Refused with a result code, never
    another exception (which would end the wake with the agent in an undefined place)."""
    with pytest.raises(dmanifest.Refused) as e:
        dmanifest.check(data, [bytes(32)], bytes(16), bytes(16), 0, "no-such-dir")  # no kid matches
    assert e.value.result in (dconst.RES_UNSUPPORTED_IMAGE, dconst.RES_SIGNATURE_INVALID)


def _encodable(v: object) -> bool:
    try:
        cbor2.dumps(v)
        return True
    except Exception:
        return False
