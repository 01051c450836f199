"""The gateway's HTTP side against the real gateway process, with real HTTP (aiohttp client):

- authentication: a non-loopback ``--http`` without tokens refuses to start; on such a bind
  every read needs a token (a device page too), a wrong token is a 401, a browser session from
  ``/api/login`` works, and a cookie-carried action without the same-origin header is refused;
- ``/metrics`` parses with prometheus_client's parser and its counters move with traffic
  (reports, blocks, bytes, store transactions, jobs and campaigns per state, dropped datagrams);
- webhooks reach a local receiver that was down at first (retried), in order, each with a
  signature the receiver checks with the secret from the data directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiocoap import GET, Message
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from dashboard_util import http_base, web_token
from harness import GatewayProc, run_gateway_once
from test_gateway_campaigns import SEQ, fail, offers, start, succeed



def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_non_loopback_bind_needs_tokens(tmp_path: Path) -> None:
    code, out = await asyncio.to_thread(run_gateway_once, [
        "run", "--bind", "127.0.0.1:0", "--control-bind", "127.0.0.1:0", "--http", "0.0.0.0:0",
        "--data", str(tmp_path / "d")])
    assert code == 2 and "web-token" in out and "Traceback" not in out, out

    token = web_token(tmp_path / "data", "bob")
    gw = GatewayProc(tmp_path / "data", ("--http", "0.0.0.0:0", "--rate-limit", "20",
                                         "--rate-burst", "40", "--limit-loopback"))
    await asyncio.to_thread(gw.start)
    base = http_base(gw).replace("0.0.0.0", "127.0.0.1")
    good = {"Authorization": f"Bearer {token}"}
    try:  # unsafe: keep cookies of an IP address host (aiohttp drops them by default)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async def status(path: str, method: str = "GET", **kw: Any) -> int:
                async with http.request(method, base + path, **kw) as r:
                    return r.status

            assert await status("/healthz") == 200  # for the load balancer
            assert await status("/") == 200  # the sign-in page itself
            for path in ("/api/overview", "/api/devices/dev-1", "/api/campaigns", "/metrics",
                         "/api/events", "/api/stream"):
                assert await status(path) == 401, path
            assert await status("/api/overview", headers={"Authorization": "Bearer nope"}) == 401
            assert await status("/api/overview", headers=good) == 200
            assert await status("/api/devices/dev-1", headers=good) == 404
            assert await status("/api/login", "POST", json={"token": "nope"}) == 401
            async with http.post(base + "/api/login", json={"token": token}) as r:
                assert r.status == 200 and (await r.json()) == {"operator": "bob"}
            assert await status("/api/overview") == 200  # the session cookie
            # an action carried by the cookie alone (what a cross-site form could send): refused
            assert await status("/api/campaigns/1/pause", "POST") == 403
            assert await status("/api/campaigns/1/pause", "POST",
                                headers={"X-Fota-Csrf": "1"}) == 404  # allowed: no campaign 1
            # the rate limiter's drops show in /metrics (it keeps its own counts): 200 at once
            # from one host, 20/s with a burst of 40 (harmless: an empty CON GET)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                # first a block GET from an address that never reported: 4.01 + Echo
                s.sendto(b"\x40\x01\x00\x02\xb1f\x01x", ("127.0.0.1", gw.device_port))
                s.settimeout(5)
                assert s.recv(64)[1] == 0x81  # 4.01 Unauthorized
                for _ in range(200):
                    s.sendto(b"\x40\x01\x00\x01", ("127.0.0.1", gw.device_port))
            await asyncio.sleep(0.3)
            async with http.get(base + "/metrics", headers=good) as r:
                got = samples(await r.text())
            assert got[("fota_rate_limited_datagrams_total", (("budget", "host"),))] >= 100
            events = {labels[0][1]: v for (name, labels), v in got.items()
                      if name == "fota_device_port_events_total"}
            assert events == {"echo_challenge": 1, "report_replay": 0, "observe_refused": 0,
                              "handler_failure": 0}, events
            # a live stream open while the gateway stops: it ends, the exit is clean
            async with http.get(base + "/api/stream", headers=good) as r:
                assert r.status == 200 and r.content_type == "text/event-stream"
                assert await r.content.readline() == b"retry: 2000\n"
                assert await asyncio.to_thread(gw.stop) == 0
    finally:
        await asyncio.to_thread(gw.stop)


async def test_metrics_move_and_webhooks_arrive_signed(tmp_path: Path, coap_client) -> None:
    ctx = coap_client
    hook_port = free_tcp_port()
    gw = GatewayProc(tmp_path / "data", ("--http", "127.0.0.1:0", "--webhook",
                                         f"http://127.0.0.1:{hook_port}/hook"))
    await asyncio.to_thread(gw.start)
    base = http_base(gw)
    secret = bytes.fromhex((tmp_path / "data" / "webhook-secret").read_text().strip())
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    runner = None
    try:
        async with aiohttp.ClientSession() as http:
            async def scrape() -> dict:
                async with http.get(base + "/metrics") as r:
                    assert r.status == 200
                    return samples(await r.text())

            before = await scrape()
            devs = ["w0", "w1", "w2"]
            camp = await start(ctx, gw, devs, max_failures=1)  # 3 reports
            got = await offers(ctx, gw, devs)  # 3 reports: everyone is offered the image
            img = (await (await http.get(base + "/api/images")).json())[0]
            uri = f"{gw.device_uri}/{img['uri'].lstrip('/')}"
            resp = await ctx.request(Message(code=GET, uri=uri), handle_blockwise=False).response
            assert resp.code.dotted == "2.05" and len(resp.payload) == 1024
            # the receiver is down: w0 rolls back (device.rolled_back; 1 failure reaches the
            # threshold: campaign.paused), the others succeed (campaign.finished)
            await fail(ctx, gw, "w0", got["w0"][1])
            await succeed(ctx, gw, "w1", got["w1"][1])
            await succeed(ctx, gw, "w2", got["w2"][1])
            after = await scrape()
            await asyncio.sleep(0.3)
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", hook_port).start()
            deadline = time.monotonic() + 10
            while len(received) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            final = await scrape()
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(gw.stop)

    def moved(name: str, labels: tuple = ()) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert moved("fota_reports_total") == 9
    assert moved("fota_blocks_served_total") == 1 and moved("fota_block_bytes_total") == 1024
    assert moved("fota_store_transaction_seconds_count") >= 9
    assert after[("fota_jobs", (("state", "succeeded"),))] == 2
    assert after[("fota_jobs", (("state", "failed"),))] == 1
    assert after[("fota_campaigns", (("state", "done"),))] == 1
    assert after[("process_resident_memory_bytes", ())] > 10_000_000
    assert final[("fota_webhook_deliveries_total", (("outcome", "retry"),))] >= 1
    assert final[("fota_webhook_deliveries_total", (("outcome", "delivered"),))] == 3

    events = []
    for headers, body in received:
        ts = headers["X-Fota-Timestamp"]
        want = "sha256=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Fota-Signature"], want)
        ev = json.loads(body)
        assert headers["X-Fota-Delivery"] == str(ev["id"]) and headers["X-Fota-Event"] == ev["event"]
        events.append(ev)
    assert [e["event"] for e in events] == ["device.rolled_back", "campaign.paused",
                                            "campaign.finished"]
    assert events[0]["device"] == "w0"
    assert events[1]["campaign"] == camp["id"] and "threshold" in events[1]["reason"]
    assert events[2]["counts"] == {"succeeded": 2, "failed": 1}
    assert "attempt 1 failed" in gw.log_text()
