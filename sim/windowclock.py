"""``device/burst.Window`` on a fake clock: answers wait in a heap by the time they arrive, and
the window's timer fires in between. One copy for tests/test_window.py and
bench/window_rounds.py (a heap entry is ``(arrival ms, tie-breaker, datagram)``)."""

from __future__ import annotations

import heapq
from typing import Any


def next_event(w: Any, q: list[tuple[int, int, bytes]]) -> tuple[int, bool]:
    """The earliest queued answer if it arrives by the window's deadline, else the deadline's
    timeout; returns the clock after it and whether an answer was delivered."""
    if q and (w.deadline is None or q[0][0] <= w.deadline):
        now, _, a = heapq.heappop(q)
        w.on_datagram(a, now)
        return now, True
    now = w.deadline
    w.on_timeout(now)
    return now, False
