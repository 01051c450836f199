"""Quotas that keep the gateway's memory, file descriptors and tables bounded: partial uploads
(per source, in total, idle expiry), a shortage of file descriptors answered 5.03 without a
traceback (real gateway under a real RLIMIT_NOFILE), self-registered devices (quota and
expiry, real SQLite), and keys at rest (modes of a fresh and of a too-open data dir)."""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import stat
from pathlib import Path

import cbor2
import pytest
from aiocoap import POST, PUT, Message
from aiocoap.optiontypes import BlockOption
from clock import Clock
from harness import GatewayProc, control

from gateway import datadir
from gateway.blobs import BlobStore
from gateway.fleet import Fleet
from gateway.requests import Refused, parse_report
from gateway.store import Store
from gateway.uploads import Block1Receiver, Busy, MemorySink
from proto.keys import ReportKey


def b1(num: int, more: bool) -> BlockOption.BlockwiseTuple:
    return BlockOption.BlockwiseTuple(num, more, 2)


def test_partial_uploads_capped_per_source_and_in_total_and_expire() -> None:
    clock = Clock()
    rx = Block1Receiver(max_transfers=3, per_source=2, idle=120, clock=clock)
    sink = lambda: MemorySink(1000)  # noqa: E731
    rx.feed(("a", 1), b1(0, True), bytes(64), sink, "a")
    rx.feed(("a", 2), b1(0, True), bytes(64), sink, "a")
    with pytest.raises(Busy):
        rx.feed(("a", 3), b1(0, True), bytes(64), sink, "a")  # per source
    rx.feed(("a", 1), b1(0, True), bytes(64), sink, "a")  # a restart is not a new transfer
    rx.feed(("b", 1), b1(0, True), bytes(64), sink, "b")
    with pytest.raises(Busy):
        rx.feed(("c", 1), b1(0, True), bytes(64), sink, "c")  # in total
    assert rx.feed(("d", 1), None, b"whole", sink, "d").buf == b"whole"  # one message: no slot
    clock.t += 100
    rx.feed(("b", 1), b1(1, True), bytes(64), sink, "b")  # keeps b alive
    clock.t += 21
    rx.feed(("c", 1), b1(0, True), bytes(64), sink, "c")  # a's two expired: room again
    assert sorted(rx.transfers) == [("b", 1), ("c", 1)]


REPORT = {ReportKey.CLASS: "esp32", ReportKey.SEQ: 1, ReportKey.STATE: 0, ReportKey.RESULT: 0}


def _report(device_id: str) -> bytes:
    return cbor2.dumps({ReportKey.ID: device_id, **REPORT})


def test_self_registration_quota_and_expiry(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    fleet = Fleet(store, BlobStore(tmp_path / "blobs"), auto_register=2, auto_expiry=1000)
    fleet.enrol({"id": "claimed", "class": "esp32"})
    for n in range(2):
        fleet.report(parse_report(_report(f"self-{n}")), "192.0.2.1:5683")
    with pytest.raises(Refused, match="no more self-registered"):
        fleet.report(parse_report(_report("self-2")), "192.0.2.1:5683")
    fleet.report(parse_report(_report("claimed")), "192.0.2.1:5683")  # enrolled: not counted
    fleet.set_tags("self-1", {"add": ["keep"]})  # the operator touched it: kept
    now = store.device("self-0")["last_seen"]
    fleet.expire(now + 999)
    assert store.device("self-0") is not None
    fleet._next_auto_sweep = 0.0  # the sweep runs once a minute; this test jumps in time
    fleet.expire(now + 1001)
    assert store.device("self-0") is None and store.device("self-1") is not None
    assert store.device("claimed") is not None
    fleet.report(parse_report(_report("self-2")), "192.0.2.1:5683")  # a place is free again
    assert any(e["kind"] == "expired" for e in fleet.views.events(0))
    with pytest.raises(Refused, match="unknown device"):
        Fleet(store, fleet.blobs, enrolled_only=True).report(
            parse_report(_report("self-9")), "192.0.2.1:5683")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_data_dir_modes_fresh_and_narrowed(tmp_path: Path, caplog) -> None:
    old = os.umask(0o022)
    try:
        wide = tmp_path / "wide"
        wide.mkdir(mode=0o755)
        (wide / "gateway.sqlite3").write_bytes(b"")
        os.chmod(wide / "gateway.sqlite3", 0o644)
        with caplog.at_level(logging.WARNING, logger="fota.gateway"):
            datadir.secure(wide)
        assert _mode(wide) == 0o700 and _mode(wide / "gateway.sqlite3") == 0o600
        assert "was 0755: narrowed to 0700" in caplog.text
        assert "was 0644: narrowed to 0600" in caplog.text
        assert os.umask(0o022) == 0o077  # secure() left the umask at 077
    finally:
        os.umask(old)


async def test_fresh_gateway_data_dir_is_private(tmp_path: Path, coap_client) -> None:
    gw = GatewayProc(tmp_path / "data").start()
    try:
        resp = await coap_client.request(Message(code=POST, uri=f"{gw.device_uri}/r",
                                                 payload=_report("modes-1"))).response
        assert resp.code.dotted == "2.04"
        assert _mode(gw.data) == 0o700
        for name in ("gateway.sqlite3", "gateway.sqlite3-wal"):
            assert _mode(gw.data / name) == 0o600, name
    finally:
        assert gw.stop() == 0


async def test_fd_shortage_answers_503_with_one_log_line(tmp_path: Path, coap_client) -> None:
    """Partial uploads hold a file descriptor each; with RLIMIT_NOFILE just above what the
    gateway has open, uploads and reports that need a descriptor get 5.03 + Max-Age, and the
    log says so once, without a traceback; the gateway serves again once they are freed."""
    gw = GatewayProc(tmp_path / "data", ["--uploads-max", "50", "--uploads-per-source", "50",
                                         "--upload-idle", "2"]).start()
    try:
        pid = gw.proc.pid
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 3, in_use + 3))
        answers = []
        for n in range(8):
            name = hashlib.sha256(bytes([n])).hexdigest()
            m = Message(code=PUT, uri=f"{gw.control_uri}/blob/{name}", payload=bytes(64))
            m.opt.block1 = BlockOption.BlockwiseTuple(0, True, 2)
            answers.append(await coap_client.request(m, handle_blockwise=False).response)
        codes = [a.code.dotted for a in answers]
        assert "2.31" in codes and codes[-1] == "5.03", codes
        assert {(a.opt.max_age, b"file descriptors" in a.payload) for a in answers
                if a.code.dotted == "5.03"} == {(60, True)}
        log = gw.log_text()
        assert log.count("out of file descriptors") == 1 and "Traceback" not in log
        code, _ = await control(coap_client, gw, "GET", "dev")  # still serving
        assert code == "2.05"
    finally:
        assert gw.stop() == 0
