"""Live events for the dashboard: every committed store event goes to each open Server-Sent
Events stream. Bounded: at most ``MAX_CLIENTS`` streams, ``QUEUE_MAX`` events waiting per
stream; a stream that falls that far behind is closed (the browser reconnects and reloads
its view), so a slow client never holds memory or the loop."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import metrics

MAX_CLIENTS = 32
QUEUE_MAX = 500
HEARTBEAT = 15.0  # seconds between comment lines (keeps proxies from closing idle streams)
_CLOSE: dict[str, Any] = {}


class Broker:
    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def full(self) -> bool:
        return len(self.queues) >= MAX_CLIENTS

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.queues.add(q)
        metrics.SSE_CLIENTS.set(len(self.queues))
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.queues.discard(q)
        metrics.SSE_CLIENTS.set(len(self.queues))

    def __call__(self, ev: dict[str, Any]) -> None:
        """Event bus listener."""
        for q in list(self.queues):
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:  # too slow: cut it off, it will reconnect and reload
                self.unsubscribe(q)
                q.get_nowait()
                q.put_nowait(_CLOSE)

    def close(self) -> None:
        for q in list(self.queues):
            self.unsubscribe(q)
            while not q.empty():
                q.get_nowait()
            q.put_nowait(_CLOSE)


def is_close(ev: dict[str, Any]) -> bool:
    return ev is _CLOSE
