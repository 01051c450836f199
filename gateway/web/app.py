"""The dashboard's HTTP routes (aiohttp): JSON views, the live event stream, /metrics,
/healthz, and the static front end. The JSON views are the fleet's own (``views.py``:
``device_view``, ``campaign_view``, ``image_view``, ``device_detail``: what cc shows), plus the
paging and aggregates of ``queries.py``; actions call the same ``Fleet`` methods as the control
API. A route that reads the store is a plain function run on the store's thread
(``on_store``, ``storage/worker.py``): the loop never waits on the database."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from pathlib import Path
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..control_api import CAMPAIGN_ACTIONS
from ..coapx import shortage
from ..fleet import Fleet, Refused
from ..storage.worker import StoreWorker
from ..server import is_loopback
from . import charts, queries
from .auth import Auth
from .stream import HEARTBEAT, Broker, is_close

STATIC = Path(__file__).parent / "static"
COOKIE = "fota_session"
CSRF_HEADER = "X-Fota-Csrf"  # a custom header: a cross-site form or fetch cannot send it
STATUS = {"bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
          "conflict": 409}
SEEN_RECENTLY = 3600.0
CHART_CACHE = 16  # campaigns whose parsed transitions are kept
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
}

OPERATOR = "fota_operator"  # request key: the signed-in operator's name


def _is_loopback_host(host: str) -> bool:
    """``host`` is a Host header: NAME, NAME:PORT, IPv4:PORT or [IPv6]:PORT."""
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return is_loopback(host)


def _int(request: web.Request, name: str, default: int, lo: int = 0,
         hi: int = 2**62) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise web.HTTPBadRequest(text=f"{name} must be an integer from {lo} to {hi}")
    return int(text)


def on_store(route: Callable[[Any, web.Request], web.Response]) -> Any:
    """A route run on the store's thread; the store unavailable is a 503 (one log line)."""
    async def run(self: "Dashboard", request: web.Request) -> web.Response:
        try:
            return await self.worker.call(lambda: route(self, request))
        except Exception as e:
            if shortage(e) is None:
                raise
            raise web.HTTPServiceUnavailable(text=shortage(e), headers={"Retry-After": "60"})

    return run


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status, dumps=lambda o: json.dumps(o, default=str))


class Dashboard:
    def __init__(self, fleet: Fleet, worker: StoreWorker, auth: Auth, loopback: bool,
                 broker: Broker) -> None:
        self.fleet = fleet
        self.worker = worker
        self.store = fleet.store  # the fleet's Repo: queries.py runs on either engine
        self.auth = auth
        self.loopback = loopback  # reads open without sign-in
        self.broker = broker
        self._edges: OrderedDict[int, list[charts.Edge]] = OrderedDict()

    # ---- access -------------------------------------------------------------------------
    def operator(self, request: web.Request) -> str | None:
        """The signed-in operator; a wrong bearer token is a 401, not an anonymous read."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            name = self.auth.check_token(token.strip()) if scheme.lower() == "bearer" else None
            if name is None:
                raise web.HTTPUnauthorized(text="wrong token",
                                           headers={"WWW-Authenticate": "Bearer"})
            return name
        sid = request.cookies.get(COOKIE)
        return self.auth.session(sid) if sid else None

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.loopback and not _is_loopback_host(request.host):
            # a loopback bind answers only loopback names: no DNS rebinding into the fleet
            raise web.HTTPMisdirectedRequest(text="this dashboard answers only to a loopback "
                                                  "host name")
        path = request.path
        public = (path in ("/", "/healthz", "/api/login", "/api/me")
                  or path.startswith("/static/"))
        name = self.operator(request)
        if not public and name is None and (not self.loopback or request.method != "GET"):
            raise web.HTTPUnauthorized(text="sign in with an operator token "
                                            "(fota-gateway web-token NAME)")
        if request.method == "POST" and path != "/api/login" and \
                "Authorization" not in request.headers:
            # cookie-authenticated action: same-origin only
            origin = request.headers.get("Origin")
            if request.headers.get(CSRF_HEADER) != "1" or (
                    origin is not None and origin.partition("://")[2] != request.host):
                raise web.HTTPForbidden(text="cross-site request refused")
        if name is not None:
            request[OPERATOR] = name
        try:
            response = await handler(request)
        except Refused as e:
            response = web.Response(status=STATUS.get(e.kind, 400), text=str(e))
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    # ---- pages and sign-in --------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html",
                                headers={"Cache-Control": "no-cache"})

    async def me(self, request: web.Request) -> web.Response:
        return _json({"operator": self.operator(request), "open_reads": self.loopback})

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            token = body["token"]
            assert isinstance(token, str)
        except Exception:
            raise web.HTTPBadRequest(text='send {"token": "..."}') from None
        name = self.auth.check_token(token.strip())
        if name is None:
            raise web.HTTPUnauthorized(text="wrong token")
        resp = _json({"operator": name})
        resp.set_cookie(COOKIE, self.auth.new_session(name), httponly=True, samesite="Strict",
                        path="/", secure=request.secure)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        sid = request.cookies.get(COOKIE)
        if sid:
            self.auth.end_session(sid)
        resp = _json({"operator": None})
        resp.del_cookie(COOKIE, path="/")
        return resp

    # ---- health and metrics -------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.worker.call(lambda: self.fleet.store.db.execute("SELECT 1").fetchone())
        except Exception as e:
            return _json({"status": "fail", "error": str(e)}, 503)
        return _json({"status": "ok"})

    @on_store  # the store's gauges are read at scrape time
    def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- views --------------------------------------------------------------------------
    @on_store
    def overview(self, request: web.Request) -> web.Response:
        out = queries.overview(self.store, time.time() - SEEN_RECENTLY)
        out["campaigns"] = [self._campaign_brief(r) for r in self.fleet.store.campaigns()[-20:]]
        return _json(out)

    def _campaign_brief(self, row: Any) -> dict[str, Any]:
        v = self.fleet.views.campaign_view(row)
        return {k: v[k] for k in ("id", "image", "state", "created", "counts", "total",
                                  "reason")}

    @on_store
    def devices(self, request: web.Request) -> web.Response:
        total, rows = queries.devices_page(self.store, request.query.get("q", "")[:64],
                                           _int(request, "offset", 0),
                                           _int(request, "limit", 50, 1, queries.MAX_PAGE))
        return _json({"total": total, "devices": [self.fleet.views.device_view(r) for r in rows]})

    @on_store
    def device(self, request: web.Request) -> web.Response:
        view = self.fleet.views.device_detail(request.match_info["id"])
        active = [j for j in view["jobs"] if j["state"] in
                  ("queued", "offered", "downloading", "downloaded", "updating")]
        view["current_job"] = active[-1] if active else None
        return _json(view)

    @on_store
    def campaigns(self, request: web.Request) -> web.Response:
        return _json([self.fleet.views.campaign_view(r) for r in self.fleet.store.campaigns()])

    def _campaign_row(self, request: web.Request) -> Any:
        text = request.match_info["n"]
        row = self.fleet.store.campaign(int(text)) if text.isdigit() and len(text) < 19 else None
        if row is None:
            raise Refused("not_found", "unknown campaign")
        return row

    @on_store
    def campaign(self, request: web.Request) -> web.Response:
        row = self._campaign_row(request)
        view = self.fleet.views.campaign_view(row)
        state = request.query.get("state") or None
        total, jobs = queries.jobs_page(self.store, row["id"], state,
                                        _int(request, "offset", 0),
                                        _int(request, "limit", 50, 1, queries.MAX_PAGE))
        view["jobs_page"] = {"total": total, "state": state,
                             "jobs": [self.fleet.views.job_view(j) for j in jobs]}
        view["failures"] = queries.failure_reasons(self.store, row["id"])
        return _json(view)

    @on_store
    def campaign_charts(self, request: web.Request) -> web.Response:
        row = self._campaign_row(request)
        n = row["id"]
        edges = self._edges.pop(n, [])
        edges += queries.job_edges(self.store, n, edges[-1][0] if edges else 0)
        self._edges[n] = edges
        while len(self._edges) > CHART_CACHE:
            self._edges.popitem(last=False)
        now = time.time()
        return _json({
            "timeline": charts.timeline(edges, self.fleet.store.job_counts(n), row["created"],
                                        now),
            "download_seconds": charts.histogram(charts.download_times(edges)),
        })

    @on_store
    def campaign_action(self, request: web.Request) -> web.Response:
        row = self._campaign_row(request)
        action = request.match_info["action"]
        if action not in CAMPAIGN_ACTIONS:
            raise web.HTTPNotFound(text="no such action")
        view = getattr(self.fleet, f"{action}_campaign")(row["id"])
        self.fleet.store.event("dashboard", f"campaign {row['id']}: {action} by "
                               f"{request[OPERATOR]} (dashboard)", campaign=row["id"])
        return _json(view)

    @on_store
    def images(self, request: web.Request) -> web.Response:
        running = queries.image_devices(self.store)
        out = []
        for r in self.fleet.store.images():
            v = self.fleet.views.image_view(r)
            v.setdefault("label", r["label"])  # schema 4's version label (cc shows it too)
            v["devices"] = running.get((r["class"], r["seq"]), 0)
            out.append(v)
        return _json(out)

    @on_store
    def events(self, request: web.Request) -> web.Response:
        before = request.query.get("before")
        return _json(queries.events_page(self.store,
                                         _int(request, "before", 0) if before else None,
                                         _int(request, "limit", 100, 1, queries.MAX_PAGE),
                                         request.query.get("device") or None))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if self.broker.full():
            raise web.HTTPServiceUnavailable(text="too many live streams",
                                             headers={"Retry-After": "30"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no", **SECURITY_HEADERS})
        await resp.prepare(request)
        q = self.broker.subscribe()
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), HEARTBEAT)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if is_close(ev):
                    break
                await resp.write(f"id: {ev['id']}\ndata: {json.dumps(ev)}\n\n".encode())
        except (ConnectionResetError, RuntimeError):  # the browser went away
            pass
        finally:
            self.broker.unsubscribe(q)
        return resp


def make_app(dash: Dashboard) -> web.Application:
    app = web.Application(middlewares=[dash.guard], client_max_size=64 * 1024)
    app.router.add_get("/", dash.index)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    app.router.add_get("/healthz", dash.healthz)
    app.router.add_get("/metrics", dash.metrics)
    app.router.add_get("/api/me", dash.me)
    app.router.add_post("/api/login", dash.login)
    app.router.add_post("/api/logout", dash.logout)
    app.router.add_get("/api/overview", dash.overview)
    app.router.add_get("/api/devices", dash.devices)
    app.router.add_get("/api/devices/{id}", dash.device)
    app.router.add_get("/api/campaigns", dash.campaigns)
    app.router.add_get("/api/campaigns/{n}", dash.campaign)
    app.router.add_get("/api/campaigns/{n}/charts", dash.campaign_charts)
    app.router.add_post("/api/campaigns/{n}/{action}", dash.campaign_action)
    app.router.add_get("/api/images", dash.images)
    app.router.add_get("/api/events", dash.events)
    app.router.add_get("/api/stream", dash.stream)
    return app
