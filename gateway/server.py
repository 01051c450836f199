"""Assemble and run the gateway: store (on its own thread), the device endpoint, the control
context, the timeout sweeper."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sqlite3
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from . import datadir, logs, metrics, observe, oscore_creds, replies, sources, storage, uploads
from .blobs import BlobStore
from .control_api import ControlSite
from .device_api import DeviceApi
from .endpoint import DeviceEndpoint
from .eventbus import EventBus
from .fleet import DEFAULT_AUTO_EXPIRY, DEFAULT_AUTO_REGISTER, Fleet
from .ratelimit import Budgets, RateLimiter
from .storage import notify as storage_notify
from .storage.worker import DEFAULT_MAX_BATCH, DEFAULT_MAX_PENDING, StoreWorker
from .store import Store, StoreBlobs

log = logs.log
SWEEP_SECONDS = 1.0


class ConfigError(Exception):
    """Bad command line or environment: exit code 2 with this message."""


@dataclass
class Config:
    bind: tuple[str, int]
    control_bind: tuple[str, int]
    data: Path
    enrolled_only: bool = False
    max_downloads: int | None = None  # concurrent downloads over all campaigns (None: no cap)
    budgets: Budgets = field(default_factory=Budgets)  # rate limits; rate 0: no limit
    limit_loopback: bool = False  # limits and source checks for loopback too (tests, benchmarks)
    observe_lifetime: float = observe.DEFAULT_LIFETIME
    observe_per_device: int = observe.DEFAULT_PER_DEVICE
    observe_per_source: int = observe.DEFAULT_PER_SOURCE
    observe_total: int = observe.DEFAULT_TOTAL
    reply_cache: int = replies.DEFAULT_MAX
    verified_ttl: float = sources.DEFAULT_TTL
    verified_max: int = sources.DEFAULT_MAX
    uploads_max: int = uploads.MAX_TRANSFERS
    uploads_per_source: int = uploads.MAX_PER_SOURCE
    upload_idle: float = uploads.IDLE_SECONDS
    auto_register: int = DEFAULT_AUTO_REGISTER  # self-registered devices at once
    auto_expiry: float = DEFAULT_AUTO_EXPIRY  # never-enrolled silent ones deleted
    oscore: bool = False  # control API only through OSCORE (gateway/oscore_creds.py)
    store: str | None = None  # store URL (None: the SQLite file under data)
    http: tuple[str, int] | None = None  # dashboard, /metrics, /healthz (gateway/web/)
    webhooks: tuple[str, ...] = ()  # URLs for campaign/rollback events (gateway/webhooks.py)
    store_batch: int = DEFAULT_MAX_BATCH  # units of work per commit at most (storage/worker.py)
    store_pending: int = DEFAULT_MAX_PENDING  # units waiting for the store before 5.03


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT' -> (host, port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{what}: expected [ADDRESS]:PORT, got {text!r}")
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(f"{what}: expected HOST:PORT or [ADDRESS]:PORT, got {text!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: bad port in {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _server_context(site: object, bind: tuple[str, int], what: str):  # type: ignore[no-untyped-def]
    from aiocoap import Context

    # aiocoap warns once per malformed or odd datagram: anyone could fill the disk with our
    # log. Its errors still show.
    logging.getLogger(f"coap-{what}").setLevel(logging.ERROR)
    try:
        return await Context.create_server_context(site, bind=bind, transports=["udp6"],
                                                   loggername=f"coap-{what}")
    except OSError as e:
        raise ConfigError(f"cannot bind the {what} port {_fmt(*bind)}: {e.strerror or e}") from None


def _port_of(ctx: object) -> int:
    (tman,) = ctx.request_interfaces  # type: ignore[attr-defined]
    return tman.token_interface.message_interface.transport.get_extra_info("socket").getsockname()[1]


def _quiet_decode_errors(loop: asyncio.AbstractEventLoop) -> None:
    """aiocoap 0.4.17 raises UnicodeDecodeError from a Uri-Path that is not UTF-8 straight
    into the event loop (found by bench/fuzz.py on the control port): log that as one debug
    line instead of a traceback per datagram; everything else as before."""
    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, (UnicodeError, ValueError)) and any(
                "aiocoap" in f.filename for f in traceback.extract_tb(exc.__traceback__)):
            log.debug("dropped an undecodable datagram: %s", exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def run(cfg: Config) -> None:
    """Serve until SIGTERM/SIGINT. Raises ConfigError for anything the operator must fix."""
    if not is_loopback(cfg.control_bind[0]) and not cfg.oscore:
        raise ConfigError("the control API is open to anyone who reaches it: bind it to "
                          "loopback, or require OSCORE with --oscore")
    if cfg.oscore and not oscore_creds.names(cfg.data):
        raise ConfigError("--oscore without credentials: run `fota-gateway credentials add "
                          f"NAME --data {cfg.data}` first")
    # aiocoap sets SO_REUSEPORT unless told otherwise: a second gateway on the same port would
    # start silently and take half the traffic. With 0, bind() fails with EADDRINUSE.
    os.environ["AIOCOAP_REUSE_PORT"] = "0"
    try:
        datadir.secure(cfg.data)
        bus = EventBus(logs.event, metrics.on_event)
        blobs = BlobStore(cfg.data / "blobs")
    except (OSError, RuntimeError, datadir.Unsafe) as e:
        raise ConfigError(f"cannot use data directory {cfg.data}: {e}") from None
    url = cfg.store or storage.default_url(cfg.data)
    try:
        store = Store(url, on_event=bus)
    except (OSError, sqlite3.DatabaseError, RuntimeError, ValueError, psycopg.Error) as e:
        where = f"data directory {cfg.data}" if cfg.store is None else "the store"
        raise ConfigError(f"cannot use {where}: {str(e).strip().splitlines()[0]}") from None
    if store.dialect == "postgresql":  # other gateways may serve what this one stored
        blobs.shared = StoreBlobs(store)
    fleet = Fleet(store, blobs, enrolled_only=cfg.enrolled_only,
                  max_downloads=cfg.max_downloads, auto_register=cfg.auto_register,
                  auto_expiry=cfg.auto_expiry)
    # from here on only the store's thread touches the database (storage/worker.py)
    worker = StoreWorker(store, max_batch=cfg.store_batch, max_pending=cfg.store_pending)
    contexts = []
    releases: list = []
    closers: list = []  # async: the dashboard, the webhook senders
    try:
        loop = asyncio.get_running_loop()
        _quiet_decode_errors(loop)
        endpoint = DeviceEndpoint(
            DeviceApi(fleet, blobs, worker),
            limiter=(RateLimiter(cfg.budgets)
                     if cfg.budgets.rate > 0 else None),
            sources=sources.Sources(cfg.verified_ttl, cfg.verified_max),
            replies=replies.Replies(cfg.reply_cache),
            observations=observe.Observations(cfg.observe_per_device, cfg.observe_per_source,
                                              cfg.observe_total, cfg.observe_lifetime),
            limit_loopback=cfg.limit_loopback)
        try:
            device_port = endpoint.open(cfg.bind)
        except OSError as e:
            raise ConfigError(f"cannot bind the device port {_fmt(*cfg.bind)}: "
                              f"{e.strerror or e}") from None
        releases.append(endpoint.close)
        control = ControlSite(fleet, blobs, worker, uploads.Block1Receiver(
            cfg.uploads_max, cfg.uploads_per_source, cfg.upload_idle))
        control.device_port = device_port  # for the image URIs cc prints
        site: object = control
        if cfg.oscore:
            from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

            control.require_oscore = True
            try:
                creds = oscore_creds.server_credentials(cfg.data)
            except Exception as e:  # garbled files, a lock held by another gateway
                raise ConfigError(f"cannot load the OSCORE credentials: {e}") from None
            releases.append(lambda: oscore_creds.release(creds))
            site = OscoreSiteWrapper(control, creds)
        control_ctx = await _server_context(site, cfg.control_bind, "control")
        contexts.append(control_ctx)
        http = ""
        if cfg.http is not None:
            from . import web  # aiohttp is loaded only when asked for

            dash = await web.start(fleet, worker, bus, cfg.data, cfg.http,
                                   is_loopback(cfg.http[0]), endpoint.counters)
            closers.append(dash.close)
            http = f" http={_fmt(cfg.http[0], dash.port)}"
        if cfg.webhooks:
            from .webhooks import Classifier, Webhooks, load_secret

            classify = await worker.call(lambda: Classifier(store))
            hooks = Webhooks(list(cfg.webhooks), load_secret(cfg.data), classify)
            bus.subscribe(hooks)
            closers.append(hooks.close)

        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if store.dialect == "postgresql":  # Observe across the gateways on this database
            local = fleet.on_command_change

            def changed(device_id: str) -> None:  # on the store's thread
                local(device_id)
                store.announce_command(device_id)

            fleet.on_command_change = changed
            listener = asyncio.ensure_future(storage_notify.listen(
                url, lambda: store.backend_pid, endpoint.notify, stop))

            async def stop_listening() -> None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

            closers.append(stop_listening)
        log.info("listening devices=%s control=%s%s data=%s",
                 _fmt(cfg.bind[0], device_port),
                 _fmt(cfg.control_bind[0], _port_of(control_ctx)), http, cfg.data,
                 extra={"fields": {"event": "ready"}})

        def sweep() -> None:  # on the store's thread (uploads live there too)
            control.uploads.expire()
            if store.take_sweeper():  # one sweeper among gateways sharing a database
                fleet.expire()
                store.file_events()  # a device's events, filed in bulk (storage/repo.py)

        while not stop.is_set():
            try:
                await worker.call(sweep)
            except Exception as e:  # a full disk must not stop the gateway; retry next tick
                log.error("timeout sweep failed: %s", e)
            try:
                endpoint.expire()
            except Exception as e:  # a full disk must not stop the gateway; retry next tick
                log.error("timeout sweep failed: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)
            except asyncio.TimeoutError:
                pass
        log.info("shutting down", extra={"fields": {"event": "stop"}})
        await worker.call(control.uploads.close)
    finally:
        for close in reversed(closers):
            await close()
        for ctx in contexts:
            await ctx.shutdown()
        for release in releases:
            release()
        worker.close()
        blobs.close()
        store.close()
