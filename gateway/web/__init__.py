"""The dashboard, /metrics and /healthz on the opt-in ``--http`` bind: an aiohttp server on the
gateway's own asyncio loop (no second process; its routes read the store on the store's thread,
as the CoAP handlers do). aiohttp rather than Starlette + uvicorn: it runs as an
``AppRunner`` on a loop someone else owns without taking over signal handling, and its HTTP
client sends the webhooks, so one library serves both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .. import metrics
from ..eventbus import EventBus
from ..fleet import Fleet
from ..storage.worker import StoreWorker
from . import queries
from .app import Dashboard, make_app
from .auth import Auth, TokenError, load_tokens
from .stream import Broker


class Web:
    def __init__(self, runner: web.AppRunner, broker: Broker, unsubscribe: Callable[[], None],
                 collector: object) -> None:
        self.runner = runner
        self.broker = broker
        self._unsubscribe = unsubscribe
        self._collector = collector

    @property
    def port(self) -> int:
        return self.runner.addresses[0][1]

    async def close(self) -> None:
        self._unsubscribe()
        self.broker.close()  # open streams end, so cleanup does not wait for them
        await self.runner.cleanup()
        metrics.REGISTRY.unregister(self._collector)  # type: ignore[arg-type]


async def start(fleet: Fleet, worker: StoreWorker, bus: EventBus, data: Path,
                bind: tuple[str, int],
                loopback: bool, port: Callable[[], dict[str, dict[str, int]]]) -> Web:
    """Serve; raises ``ConfigError`` (exit 2) for a bind without credentials or a taken port."""
    from ..server import ConfigError, _fmt

    try:
        tokens = load_tokens(data)
    except TokenError as e:
        raise ConfigError(str(e)) from None
    if not loopback and not tokens:
        raise ConfigError("the dashboard on a non-loopback --http bind needs operator tokens: "
                          f"run `fota-gateway web-token NAME --data {data}` first")
    broker = Broker()
    dash = Dashboard(fleet, worker, Auth(tokens), loopback, broker)
    runner = web.AppRunner(make_app(dash), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, bind[0], bind[1], reuse_address=True).start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot bind the dashboard port {_fmt(*bind)}: "
                          f"{e.strerror or e}") from None
    collector = await worker.call(  # registering collects once: the store's gauges
        lambda: metrics.bind_store(lambda: queries.counts(fleet.store), port))
    return Web(runner, broker, bus.subscribe(broker, asyncio.get_running_loop()), collector)
