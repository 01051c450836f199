"""The answers to recent reports, so that a retransmitted report gets the same answer.

A report is not idempotent (it moves a job, bumps a MAC counter), so a CON retransmitted
because its ACK was lost must be answered from a cache, not applied twice (RFC 7252 4.5).
aiocoap's deduplication kept every request and response for 247 s whatever sent them (~4 KiB
each: a flood of malformed reports grew the gateway by 472 MB). Here one slot per *device*
holds its last answer (keyed by the device id from the report, checked against the source,
message id and the report's bytes): a device that floods overwrites its own slot, a malformed
report is never cached (answering it again costs the same and changes nothing), and only a
report the fleet accepted takes a slot, so a flood from new sources can add entries only as far
as devices may register (``--auto-register``). The slots have a total cap (least recently
answered evicted) and expire after EXCHANGE_LIFETIME.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

EXCHANGE_LIFETIME = 247.0  # RFC 7252 4.8.2: how long a sender may retransmit
DEFAULT_MAX = 20_000  # devices whose last answer is kept (a few hundred bytes each)


class Replies:
    def __init__(self, size: int = DEFAULT_MAX, lifetime: float = EXCHANGE_LIFETIME, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.lifetime = lifetime
        self.clock = clock
        # device id -> (time, source, message id, report bytes, answer bytes); oldest first
        self._slots: OrderedDict[str, tuple[float, Any, int, bytes, bytes]] = OrderedDict()
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, device_id: str, source: Any, mid: int, report: bytes) -> bytes | None:
        slot = self._slots.get(device_id)
        if slot is None or self.clock() - slot[0] > self.lifetime:
            return None
        if (slot[1], slot[2], slot[3]) != (source, mid, report):
            return None
        self.replayed += 1
        return slot[4]

    def put(self, device_id: str, source: Any, mid: int, report: bytes, answer: bytes) -> None:
        self._slots[device_id] = (self.clock(), source, mid, report, answer)
        self._slots.move_to_end(device_id)
        while len(self._slots) > self.size:
            self._slots.popitem(last=False)

    def expire(self) -> None:
        now = self.clock()
        while self._slots:
            device_id, slot = next(iter(self._slots.items()))
            if now - slot[0] <= self.lifetime:
                break
            del self._slots[device_id]
