"""Observe across gateways: a change to a device's pending command made on one gateway is told
to every other gateway sharing the PostgreSQL database (LISTEN/NOTIFY), which notifies the
device's observers if it has any.

The sender queues device ids in its transaction (``pg_notify`` is delivered at commit, never
for a rollback), several ids per notification (PostgreSQL's payload limit is 8000 bytes). The
listener holds its own connection and skips what its own gateway sent (it told its observers
already); when the connection drops it connects again after a pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

CHANNEL = "fota_command"
PAYLOAD_MAX = 7900  # bytes of device ids (newline-separated) in one notification
RETRY_SECONDS = 2.0

log = logging.getLogger("fota.gateway")


def chunks(device_ids: list[str]) -> list[str]:
    """Newline-joined payloads of at most PAYLOAD_MAX bytes (ids are at most 64 characters)."""
    out, part, size = [], [], 0
    for d in dict.fromkeys(device_ids):
        n = len(d.encode()) + 1
        if part and size + n > PAYLOAD_MAX:
            out.append("\n".join(part))
            part, size = [], 0
        part.append(d)
        size += n
    if part:
        out.append("\n".join(part))
    return out


async def listen(url: str, own_pid: Callable[[], int], notify: Callable[[str], None],
                 stop: asyncio.Event) -> None:
    """Until ``stop``: hand every device id another gateway announced to ``notify``."""
    import psycopg

    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                gen = conn.notifies()
                async for n in gen:
                    if n.pid == own_pid():
                        continue
                    for device_id in n.payload.split("\n"):
                        notify(device_id)
                    if stop.is_set():
                        break
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the database restarted, the network dropped: listen again
            log.error("store: notifications from other gateways stopped (%s); again in %g s",
                      e, RETRY_SECONDS)
        try:
            await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
        except asyncio.TimeoutError:
            pass
