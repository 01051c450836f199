"""The event loop never waits on the database (gateway/storage/worker.py): while another
connection holds the store's write lock, a report waits for it (and is answered 2.04 once the
lock is gone and the report is durable), yet the same gateway answers a ping and serves a
cached firmware block meanwhile. On both engines, with the real gateway process."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import cbor2
import psycopg
import pytest
from aiocoap import CON, GET, POST, Message
from aiocoap.optiontypes import BlockOption
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import GatewayProc, publish_image_sync

from gateway.storage import SQLITE_FILE
from gateway.store import WRITE_LOCK
from proto.keys import ReportKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"off the loop key").digest())
WAIT = 10.0  # seconds a datagram may take at most (bounds the test, asserts nothing)


@contextmanager
def write_lock(engine: str, gw: GatewayProc, url: str | None) -> Iterator[None]:
    """Hold what the gateway's next write transaction must take, until the block ends."""
    if engine == "sqlite":
        db = sqlite3.connect(gw.data / SQLITE_FILE, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # the write lock (the gateway waits busy_timeout, 5 s)
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
    else:
        with psycopg.connect(url) as db:  # a transaction: the lock is held until it ends
            db.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield
            db.rollback()


def send(sock: socket.socket, gw: GatewayProc, m: Message, mid: int) -> None:
    m.mtype, m.mid, m.token = CON, mid, mid.to_bytes(2, "big")
    sock.sendto(m.encode(), ("127.0.0.1", gw.device_port))


def receive(sock: socket.socket, want: set[int]) -> dict[int, Message]:
    """Responses by message id until every id in ``want`` came (each within WAIT seconds)."""
    got: dict[int, Message] = {}
    sock.settimeout(WAIT)
    while not want <= set(got):
        m = Message.decode(sock.recvfrom(2048)[0])
        got[m.mid] = m
    return got


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_loop_serves_while_the_store_is_locked(engine, tmp_path, request):
    url = request.getfixturevalue("pg_url") if engine == "postgresql" else None
    gw = GatewayProc(tmp_path / "data", ("--store", url) if url else ()).start()
    try:
        image = os.urandom(3000)
        uri = publish_image_sync(gw, image, KEY, seq=2, device_class="esp32")["uri"]
        block = tuple(uri.strip("/").split("/"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            send(s, gw, Message(code=GET, uri_path=block), 1)  # the image id is cached now
            assert receive(s, {1})[1].code.dotted == "2.05"
            report = cbor2.dumps({ReportKey.ID: "locked-out", ReportKey.CLASS: "esp32",
                                  ReportKey.SEQ: 1, ReportKey.STATE: 0, ReportKey.RESULT: 0})
            with write_lock(engine, gw, url):
                send(s, gw, Message(code=POST, uri_path=("r",), payload=report), 100)
                send(s, gw, Message(code=0), 101)  # a CoAP ping: Reset answers it
                send(s, gw, Message(code=GET, uri_path=block,
                                    block2=BlockOption.BlockwiseTuple(1, False, 6)), 102)
                meanwhile = receive(s, {101, 102})
                # the report (read first) waits for the lock; the loop answered the others
                assert 100 not in meanwhile
                assert meanwhile[101].mtype.name == "RST"
                assert meanwhile[102].code.dotted == "2.05"
                assert meanwhile[102].payload == image[1024:2048]
            answered = receive(s, {100})
        assert answered[100].code.dotted == "2.04"  # durable once the lock was released
    finally:
        gw.stop()


def test_a_dropped_database_connection_is_replaced(pg_url, tmp_path):
    """PostgreSQL drops the gateway's store connection (a restart, a failover, an operator):
    reports meanwhile are answered 5.03 (at most one here: the next batch connects again), the
    log says so in one line, and reports go through again on a new connection."""
    gw = GatewayProc(tmp_path / "data", ("--store", pg_url)).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            def report(mid: int) -> str:
                body = cbor2.dumps({ReportKey.ID: "dropped", ReportKey.CLASS: "esp32",
                                    ReportKey.SEQ: 1, ReportKey.STATE: mid % 2,
                                    ReportKey.RESULT: 0})
                send(s, gw, Message(code=POST, uri_path=("r",), payload=body), mid)
                return receive(s, {mid})[mid].code.dotted

            assert report(1) == "2.04"
            with psycopg.connect(pg_url, autocommit=True) as db:
                gone = db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "datname = current_database() AND pid <> pg_backend_pid() AND "
                    "query NOT LIKE 'LISTEN%'").fetchall()
            assert gone == [(True,)]  # the store's connection (not the listener's)
            codes = [report(2), report(3), report(4)]
        assert codes[-1] == "2.04" and set(codes) <= {"2.04", "5.03"}
        assert codes.count("5.03") <= 1
        log = gw.log_text()
        assert log.count("connected to the database again") == 1
        assert log.count("store unavailable") == codes.count("5.03")  # one line, not a traceback
        assert "Traceback" not in log
    finally:
        gw.stop()
