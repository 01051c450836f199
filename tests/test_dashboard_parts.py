"""The dashboard's and webhooks' small parts in-process, with injected clocks and sleeps:
sessions expire and are capped; a webhook that keeps failing is retried with back-off and
then dropped; a full queue drops instead of blocking (real HTTP to a local receiver)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway import metrics, webhooks
from gateway.web import auth


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
