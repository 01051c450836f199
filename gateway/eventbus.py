"""Fan-out of committed store events to the gateway's listeners (log, metrics, dashboard
stream, webhooks). A listener that raises is logged and skipped: it must never undo or delay a
transaction that is already committed, nor keep the next listener from hearing about it.

The bus is called where the events commit: on the store's thread (``storage/worker.py``). A
listener that belongs to the event loop subscribes with ``loop`` and is called there."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fota.gateway")

Listener = Callable[[dict[str, Any]], None]


class EventBus:
    def __init__(self, *listeners: Listener) -> None:
        self.listeners: list[Listener] = list(listeners)

    def subscribe(self, listener: Listener,
                  loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], None]:
        """Add ``listener`` (called on ``loop`` when given); returns its unsubscribe."""
        if loop is not None:
            listener = _on_loop(listener, loop)
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def __call__(self, ev: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(ev)
            except Exception as e:  # one bad listener must not silence the others
                log.error("event listener %s failed on event %s: %s",
                          getattr(listener, "__qualname__", listener), ev.get("id"), e)


def _on_loop(listener: Listener, loop: asyncio.AbstractEventLoop) -> Listener:
    def hop(ev: dict[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(listener, ev)
        except RuntimeError:  # the loop closed: shutting down
            pass

    hop.__qualname__ = getattr(listener, "__qualname__", repr(listener))
    return hop
