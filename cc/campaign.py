"""Following a campaign until every job is final, its deadline passes, or the gateway vanishes.

Polling ``GET camp/<n>?jobs=WATCH_JOBS`` (not Observe): a poll survives a gateway restart, and a
campaign map with its jobs can exceed the ~1 KiB an Observe notification may carry in aiocoap
(issue #177). Whether it is over is read from the counts (every job), never from the jobs the
answer carries (a campaign of 100,000 sends the first few); the last answer is fetched whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Any

from proto import uris
from proto.codes import CampaignState, JobState
from proto.control import EVENTS_PAGE

from .client import ControlClient, Unreachable
from .errors import CcError

POLL_INTERVAL = 0.5  # seconds between polls of a small campaign: cheap, smooth bars
POLL_PER_JOB = 0.002  # ...and more for big ones: 1000 jobs are ~100 kB (Block2) per poll
WATCH_JOBS = 50  # jobs per poll: per-device bars of a small campaign, the first failures
DEADLINE_GRACE = 3.0  # seconds past the deadline for the gateway to mark stragglers timed out
OUTAGE_LIMIT = 30.0  # seconds without any answer before giving up (a gateway restart is shorter)


def path(n: int) -> str:
    return f"{uris.CAMP}/{n}"


def jobs(camp: dict[str, Any]) -> list[dict[str, Any]]:
    return list(camp.get("jobs") or [])


#: job states where something still happens without the operator
IN_FLIGHT = (JobState.OFFERED, JobState.DOWNLOADING, JobState.DOWNLOADED, JobState.UPDATING)
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def counts(camp: dict[str, Any]) -> dict[str, int]:
    """Jobs per state, of all the campaign's jobs."""
    return dict(camp.get("counts") or {})


def finished(camp: dict[str, Any]) -> bool:
    """All jobs final, or paused with nothing in flight: only the operator moves it on."""
    c = counts(camp)
    if camp.get("state") == CampaignState.PAUSED:
        return not any(c.get(s) for s in IN_FLIGHT)
    return all(s in JobState.FINAL for s, n in c.items() if n)


#: job states that are fine: updated, or already running that image or a newer one
DONE_OK = (JobState.SUCCEEDED, JobState.SKIPPED)


def updated(camp: dict[str, Any]) -> int:
    return counts(camp).get(JobState.SUCCEEDED, 0)


def skipped(camp: dict[str, Any]) -> int:
    return counts(camp).get(JobState.SKIPPED, 0)


def not_ok(camp: dict[str, Any]) -> int:
    """How many jobs did not succeed (nor were skipped)."""
    return sum(n for s, n in counts(camp).items() if s not in DONE_OK)


def succeeded(camp: dict[str, Any]) -> bool:
    """Every job updated or skipped, and at least one device updated: a campaign that updated
    nothing is not a success."""
    return not_ok(camp) == 0 and updated(camp) > 0


def failures(camp: dict[str, Any]) -> list[dict[str, Any]]:
    """Every job that did not succeed, including the ones still active when we stopped waiting."""
    return [j for j in jobs(camp) if j.get("state") not in DONE_OK]


def parse_duration(text: str, what: str) -> int:
    """'90', '90s', '30m', '2h', '1d' -> seconds."""
    t = text.strip().lower()
    try:
        if t and t[-1] in DURATION_UNITS:
            value = float(t[:-1]) * DURATION_UNITS[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise CcError(f"{what} must be like 90, 90s, 30m, 2h or 1d, not {text!r}") from None
    if not value > 0 or value != value:
        raise CcError(f"{what} must be positive, not {text!r}")
    return int(value)


def parse_since(text: str, now: float | None = None) -> float:
    """Unix time, ISO 8601 (naive = UTC) or an age like 15m -> unix time."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    if t and t[-1].lower() in DURATION_UNITS and t[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - parse_duration(t, "--since")
    try:
        d = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise CcError(f"--since must be a unix time, an ISO 8601 time or an age like 15m, "
                      f"not {text!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def policy_body(*, canary: int | None, wave: str | None, success_rate: float | None,
                max_failures: str | None, max_downloads: int | None, defer: int | None,
                window: str | None, window_duration: str | None,
                window_tz: str | None) -> dict[str, Any]:
    """The policy fields of ``POST camp`` from cc's options (the gateway checks them too)."""
    if window is None and (window_duration is not None or window_tz is not None):
        raise CcError("--window-duration and --window-tz need --window CRON")
    if window_tz is not None:
        check_zone(window_tz)
    body: dict[str, Any] = {}
    if canary:
        body["canary"] = canary
    if wave is not None:
        body["wave"] = _amount(wave, "--wave")
    if success_rate is not None:
        body["success_rate"] = success_rate
    if max_failures is not None:
        body["max_failures"] = _amount(max_failures, "--max-failures")
    if max_downloads is not None:
        body["max_downloads"] = max_downloads
    if defer is not None:
        body["defer"] = defer
    if window is not None:
        body["window"] = {"start": window, "tz": window_tz or "UTC",
                          "duration": parse_duration(window_duration or "1h",
                                                     "--window-duration")}
    return body


def check_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CcError(f"--window-tz: unknown time zone {name!r} (IANA names like "
                      "Europe/Paris or UTC)") from None


def _amount(text: str, what: str) -> int | str:
    t = text.strip()
    if t.endswith("%"):
        return t
    if t.isdigit():
        return int(t)
    raise CcError(f"{what} must be a count (5) or a percentage (25%), not {text!r}")


EVENT_PAGES = 200  # pages of EVENTS_PAGE events one `cc events` fetches at most


async def events(client: ControlClient, since: float) -> list[dict[str, Any]]:
    """The event log from ``since``, every page (``GET ev`` answers at most one page; the next
    starts at the last time seen, the overlap is dropped by id)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(EVENT_PAGES):
        page = await client.get(f"{uris.EVENTS}?since={since:.6f}")
        fresh = [e for e in page if e.get("id") not in seen]
        seen.update((e["id"], e) for e in fresh)
        if len(page) < EVENTS_PAGE or not fresh:
            break
        since = float(page[-1]["time"])
    return sorted(seen.values(), key=lambda e: e["id"])


def watched(n: int) -> str:
    return f"{path(n)}?jobs={WATCH_JOBS}"


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
            camp = await client.get(watched(n))
            last_answer = time.monotonic()
            on_update(camp)
        except Unreachable:
            if camp is None or time.monotonic() - last_answer > OUTAGE_LIMIT:
                raise
        if camp is not None:
            if limit is None:
                limit = wait_limit(camp)
            if finished(camp) or time.monotonic() - start >= limit:
                try:  # the outcome with as many jobs as an answer carries (for --json)
                    return await client.get(path(n))
                except Unreachable:
                    return camp
        await asyncio.sleep(poll_interval(camp))
