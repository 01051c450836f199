"""Assemble and run the gateway: store, two aiocoap server contexts, the timeout sweeper."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import logs, oscore_creds
from .blobs import BlobStore
from .control_api import ControlSite
from .device_api import DeviceSite, FirmwareFastPath
from .fleet import Fleet
from .ratelimit import DEFAULT_RATE, RateLimiter, guard
from .store import Store

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
    rate_limit: float = DEFAULT_RATE  # datagrams/s per source host on the device bind; 0: off
    limit_loopback: bool = False  # apply it to loopback sources too (tests, benchmarks)
    oscore: bool = False  # control API only through OSCORE (gateway/oscore_creds.py)


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
    # log. Its errors still show; the rate limiter logs floods once a minute per host.
    logging.getLogger(f"coap-{what}").setLevel(logging.ERROR)
    try:
        return await Context.create_server_context(site, bind=bind, transports=["udp6"],
                                                   loggername=f"coap-{what}")
    except OSError as e:
        raise ConfigError(f"cannot bind the {what} port {_fmt(*bind)}: {e.strerror or e}") from None


def _port_of(ctx: object) -> int:
    (tman,) = ctx.request_interfaces  # type: ignore[attr-defined]
    return tman.token_interface.message_interface.transport.get_extra_info("socket").getsockname()[1]


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
        cfg.data.mkdir(parents=True, exist_ok=True)
        store = Store(cfg.data / "gateway.sqlite3", on_event=logs.event)
        blobs = BlobStore(cfg.data / "blobs")
    except (OSError, sqlite3.DatabaseError, RuntimeError) as e:
        raise ConfigError(f"cannot use data directory {cfg.data}: {e}") from None
    fleet = Fleet(store, blobs, enrolled_only=cfg.enrolled_only,
                  max_downloads=cfg.max_downloads)
    contexts = []
    releases: list = []
    try:
        device_ctx = await _server_context(DeviceSite(fleet), cfg.bind, "device")
        contexts.append(device_ctx)
        fast = FirmwareFastPath(fleet, blobs)
        fast.install(device_ctx)
        # outermost: a flood is dropped before anything parses it
        guard(device_ctx, RateLimiter(cfg.rate_limit, limit_loopback=cfg.limit_loopback)
              if cfg.rate_limit > 0 else None)
        control = ControlSite(fleet, blobs)
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
        guard(control_ctx, None)
        contexts.append(control_ctx)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("listening devices=%s control=%s data=%s",
                 _fmt(cfg.bind[0], _port_of(device_ctx)),
                 _fmt(cfg.control_bind[0], _port_of(control_ctx)), cfg.data,
                 extra={"fields": {"event": "ready"}})
        while not stop.is_set():
            try:
                fleet.expire()
                control.uploads.expire()
            except Exception as e:  # a full disk must not stop the gateway; retry next tick
                log.error("timeout sweep failed: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)
            except asyncio.TimeoutError:
                pass
        log.info("shutting down", extra={"fields": {"event": "stop"}})
        control.uploads.close()
    finally:
        for ctx in contexts:
            await ctx.shutdown()
        for release in releases:
            release()
        blobs.close()
        store.close()
