"""The dashboard's and webhooks' small parts in-process, with injected clocks and sleeps:
sessions expire and are capped; a webhook that keeps failing is retried with back-off and
then dropped; a full queue drops instead of blocking (real HTTP to a local receiver); the
dashboard's queries on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway import metrics, webhooks
from gateway.store import Store
from gateway.web import auth, queries


def test_tokens_hashed_at_rest_sessions_expire_and_are_capped(tmp_path: Path) -> None:
    token = auth.add_token(tmp_path, "alice")
    stored = (tmp_path / auth.TOKENS_FILE)
    assert token not in stored.read_text() and stat.S_IMODE(stored.stat().st_mode) == 0o600
    now = [1000.0]
    a = auth.Auth(auth.load_tokens(tmp_path), clock=lambda: now[0])
    assert a.check_token(token) == "alice" and a.check_token(token + "x") is None
    sid = a.new_session("alice")
    now[0] += auth.SESSION_SECONDS - 1
    assert a.session(sid) == "alice"
    now[0] += 1
    assert a.session(sid) is None and sid not in a.sessions
    first = a.new_session("alice")
    for _ in range(auth.MAX_SESSIONS):
        a.new_session("bob")
    assert len(a.sessions) == auth.MAX_SESSIONS and a.session(first) is None  # oldest out
    auth.revoke_token(tmp_path, "alice")
    assert auth.load_tokens(tmp_path) == {}


def dropped() -> float:
    return metrics.REGISTRY.get_sample_value("fota_webhook_deliveries_total",
                                             {"outcome": "dropped"}) or 0.0


async def test_webhook_backs_off_then_gives_up_and_never_blocks() -> None:
    hits = []

    async def broken(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/hook", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    delays: list[float] = []
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == webhooks.MAX_ATTEMPTS - 1:
            await gate.wait()  # hold the sender in its last back-off: the queue fills up
        elif len(delays) >= webhooks.MAX_ATTEMPTS:
            await asyncio.Event().wait()  # the next event's first back-off: stop there

    session = aiohttp.ClientSession()
    try:
        sender = webhooks.Sender(url, b"k" * 32, session, sleep=sleep)
        before = dropped()
        sender.offer({"id": 1, "event": "campaign.finished"})
        for _ in range(100):
            if len(delays) == webhooks.MAX_ATTEMPTS - 1:
                break
            await asyncio.sleep(0.05)
        assert delays == [1, 2, 4, 8, 16, 32, 60]
        for i in range(webhooks.QUEUE_MAX + 5):  # returns at once, whatever the receiver does
            sender.offer({"id": 2 + i, "event": "device.rolled_back"})
        assert sender.queue.qsize() == webhooks.QUEUE_MAX and dropped() == before + 5
        gate.set()
        for _ in range(100):
            if len(delays) > webhooks.MAX_ATTEMPTS - 1:
                break
            await asyncio.sleep(0.05)
        # 8 tries of event 1, then given up (dropped), then the first try of event 2
        assert [b[:8] for b in hits] == [b'{"id":1,'] * webhooks.MAX_ATTEMPTS + [b'{"id":2,']
        assert dropped() == before + 6
        sender.task.cancel()
    finally:
        await session.close()
        await runner.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_dashboard_queries_read_rows_by_name_on_both_engines(store_url: str) -> None:
    s = Store(store_url)
    try:
        with s.transaction():
            s._many("INSERT INTO devices(id, class, seq, last_seen, tags) VALUES (?,?,?,?,?)",
                    [("dev-1", "c", 1, 100.0, '["a_b"]'), ("dev-2", "c", 2, 5.0, "[]"),
                     ("x-3", "d", 1, None, "[]")])
            s._exec("INSERT INTO images(id, digest, size, seq, class, vendor, uri, manifest, "
                    "created) VALUES ('i', 'h', 1, 2, 'c', 'v', 'u', ?, 0)", (b"m",))
            n = s._scalar("INSERT INTO campaigns(image, state, created, deadline) "
                          "VALUES ('i', 'running', 0, 1) RETURNING id")
            s._many("INSERT INTO jobs(campaign, device, state, result, size, updated) "
                    "VALUES (?,?,?,?,1,0)",
                    [(n, "dev-1", "failed", 3), (n, "dev-2", "queued", None)])
            s.event("job", "job 1: downloading -> failed", device="dev-1", campaign=n)
        assert queries.counts(s) == {"jobs": {"failed": 1, "queued": 1},
                                     "campaigns": {"running": 1}, "devices": 3}
        total, rows = queries.devices_page(s, "dev", 1, 10)
        assert total == 2 and [r["id"] for r in rows] == ["dev-2"]
        assert queries.devices_page(s, "a_b", 0, 10)[0] == 1  # _ matched literally
        assert queries.devices_page(s, "a%", 0, 10)[0] == 0
        total, jobs = queries.jobs_page(s, n, "failed", 0, 10)
        assert total == 1 and jobs[0]["device"] == "dev-1"
        o = queries.overview(s, 50.0)
        assert o["devices"] == 3 and o["seen_recently"] == 1
        assert o["by_class"] == [{"key": "c", "count": 2}, {"key": "d", "count": 1}]
        assert queries.image_devices(s) == {("c", 1): 1, ("c", 2): 1, ("d", 1): 1}
        assert [f["count"] for f in queries.failure_reasons(s, n)] == [1]
        assert [e[2:] for e in queries.job_edges(s, n)] == [(1, "downloading", "failed")]
        assert [e["kind"] for e in queries.events_page(s, None, 10, "dev-1")] == ["job"]
    finally:
        s.close()
