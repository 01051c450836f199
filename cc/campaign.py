"""Following a campaign until every job is final, its deadline passes, or the gateway vanishes.

Polling ``GET camp/<n>`` (not Observe): a poll survives a gateway restart, and a campaign map with
its jobs can exceed the ~1 KiB an Observe notification may carry in aiocoap (issue #177).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from proto import uris
from proto.codes import JobState

from .client import ControlClient, Unreachable
from .errors import CcError

POLL_INTERVAL = 0.5  # seconds between polls of a small campaign: cheap, smooth bars
POLL_PER_JOB = 0.002  # ...and more for big ones: 1000 jobs are ~100 kB (Block2) per poll
DEADLINE_GRACE = 3.0  # seconds past the deadline for the gateway to mark stragglers timed out
OUTAGE_LIMIT = 30.0  # seconds without any answer before giving up (a gateway restart is shorter)


def path(n: int) -> str:
    return f"{uris.CAMP}/{n}"


def jobs(camp: dict[str, Any]) -> list[dict[str, Any]]:
    return list(camp.get("jobs") or [])


def finished(camp: dict[str, Any]) -> bool:
    return all(j.get("state") in JobState.FINAL for j in jobs(camp))


def succeeded(camp: dict[str, Any]) -> bool:
    return all(j.get("state") == JobState.SUCCEEDED for j in jobs(camp))


def failures(camp: dict[str, Any]) -> list[dict[str, Any]]:
    """Every job that did not succeed, including the ones still active when we stopped waiting."""
    return [j for j in jobs(camp) if j.get("state") != JobState.SUCCEEDED]


def poll_interval(camp: dict[str, Any] | None) -> float:
    return POLL_INTERVAL + POLL_PER_JOB * (len(jobs(camp)) if camp else 0)


def wait_limit(camp: dict[str, Any]) -> float:
    """How long to follow a campaign: its own timeout (deadline - created) plus some grace.

    Differences of gateway times, so the clocks of the two hosts need not agree."""
    try:
        span = float(camp["deadline"]) - float(camp["created"])
    except (KeyError, TypeError, ValueError):
        raise CcError(f"gateway sent a campaign without deadline/created: {camp!r}") from None
    return max(span, 0.0) + DEADLINE_GRACE


async def follow(client: ControlClient, n: int, on_update: Callable[[dict[str, Any]], None],
                 *, limit: float | None = None) -> dict[str, Any]:
    """Poll campaign ``n`` until all its jobs are final or ``limit`` seconds (default: its own
    timeout) pass; returns the last campaign map seen."""
    start = last_answer = time.monotonic()
    camp: dict[str, Any] | None = None
    while True:
        try:
            camp = await client.get(path(n))
            last_answer = time.monotonic()
            on_update(camp)
        except Unreachable:
            if camp is None or time.monotonic() - last_answer > OUTAGE_LIMIT:
                raise
        if camp is not None:
            if limit is None:
                limit = wait_limit(camp)
            if finished(camp) or time.monotonic() - start >= limit:
                return camp
        await asyncio.sleep(poll_interval(camp))
