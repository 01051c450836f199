"""Rollout policy of a campaign, sans-IO: phases, gates, the error threshold, windows.

Everything here is a pure function of a campaign's policy, its jobs' counts and the time, so it is
unit-tested without a gateway; ``fleet.py`` feeds it from the store and applies the decisions.

Model (hawkBit's rollout groups, in small):

- The targets are split into phases at creation: a canary of ``canary`` devices, then waves of
  ``wave`` devices (a count or a percentage of all targets). No canary, no wave: one phase.
- Phase 0 is released at once. Phase k+1 is released when phase k has at least
  ``success_rate`` % of its jobs succeeded. A phase whose jobs are all final below that rate
  pauses the campaign (the operator resumes: the next phase goes, or retries the failures).
- The error threshold ``max_failures`` (a count, or a percentage of the released jobs) pauses
  the campaign by itself once reached (the emergency stop). Resuming acknowledges the failures
  so far: only new ones count towards the threshold again.
- A maintenance window (cron start, duration, time zone) gates new offers; a cap on concurrent
  downloads gates them too. Both answer the device with "come back in N seconds".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MAX_WINDOW = 7 * 86400  # seconds: a window longer than a week is "always"
MAX_DEFER = 86400  # seconds: the longest "come back later" we hand out
DEFAULT_DEFER = 60  # seconds a device over a download cap waits before asking again
DEFAULT_OFFER_TIMEOUT = 600  # seconds an offer may go without a download starting
DEFAULT_SUCCESS_RATE = 100.0
OUTSIDE_WINDOW = "outside the maintenance window"


class PolicyError(ValueError):
    """A policy field the gateway refuses (mapped to 4.00 with this message)."""


@dataclass(frozen=True)
class Amount:
    """A number of devices, absolute (``count``) or relative (``percent`` of some total)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, value: Any, what: str) -> Amount:
        """``5`` or ``"5"`` is a count; ``"25%"`` a percentage (0-100)."""
        if isinstance(value, bool):
            raise PolicyError(f"{what} must be a count or a percentage like '25%'")
        if isinstance(value, int):
            if value < 0:
                raise PolicyError(f"{what} must not be negative")
            return cls(count=value)
        if isinstance(value, str):
            text = value.strip()
            try:
                if text.endswith("%"):
                    p = float(text[:-1])
                    if not 0 <= p <= 100 or math.isnan(p):
                        raise ValueError
                    return cls(percent=p)
                return cls.parse(int(text), what)
            except ValueError:
                pass
        raise PolicyError(f"{what} must be a count or a percentage like '25%', not {value!r}")

    def of(self, total: int) -> int:
        """How many devices of ``total`` this is (a percentage rounds up: 25% of 1 is 1)."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return math.ceil(self.percent * total / 100 - 1e-9)

    def text(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class Window:
    """Maintenance window: opens at each ``start`` (5-field cron, local time of ``tz``) and
    stays open ``duration`` seconds."""

    start: str
    duration: int
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.start, str) or len(self.start.split()) != 5 \
                or not croniter.is_valid(self.start):
            raise PolicyError(f"window start must be a 5-field cron expression, not {self.start!r}")
        if (not isinstance(self.duration, int) or isinstance(self.duration, bool)
                or not 0 < self.duration <= MAX_WINDOW):
            raise PolicyError(f"window duration must be 1-{MAX_WINDOW} seconds")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            raise PolicyError(f"unknown time zone {self.tz!r}") from None

    def show(self, t: float) -> str:
        """``t`` in the window's zone, with the zone: '2026-11-30 02:00 CET'."""
        return self._local(t).strftime("%Y-%m-%d %H:%M %Z")

    def _local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, ZoneInfo(self.tz))

    def last_start(self, t: float) -> float:
        """The latest start at or before ``t``."""
        here = self._local(t)
        if here.second == 0 and here.microsecond == 0 and croniter.match(self.start, here):
            return t
        return float(croniter(self.start, here).get_prev(float))

    def next_start(self, t: float) -> float:
        """The first start strictly after ``t``."""
        return float(croniter(self.start, self._local(t)).get_next(float))

    def is_open(self, t: float) -> bool:
        return t - self.last_start(t) < self.duration

    def next_open(self, t: float) -> float:
        """``t`` itself when open, else the moment the window opens next."""
        return t if self.is_open(t) else self.next_start(t)

    def closes(self, t: float) -> float:
        """When the window open at ``t`` closes (starts inside it extend it)."""
        end = self.last_start(t) + self.duration
        for _ in range(1000):  # bounded: overlapping starts (duration > period) extend it
            nxt = self.next_start(end - self.duration)
            if nxt >= end:
                return end
            end = nxt + self.duration
        return end


@dataclass(frozen=True)
class Policy:
    canary: int = 0
    wave: Amount | None = None
    success_rate: float = DEFAULT_SUCCESS_RATE  # percent of a phase that must succeed
    max_failures: Amount | None = None
    max_downloads: int | None = None  # concurrent downloads of this campaign
    defer: int = DEFAULT_DEFER  # seconds a device over a cap is told to wait
    window: Window | None = None
    #: an offer whose download has not started after this long goes back to the queue, so a
    #: device that died after its offer cannot hold a download slot until the deadline
    offer_timeout: int = DEFAULT_OFFER_TIMEOUT

    @classmethod
    def from_body(cls, body: Any) -> Policy:
        """The policy fields of a ``POST camp`` body (all optional)."""
        def uint(key: str, default: Any, low: int = 0, high: int = 10**9) -> Any:
            v = body.get(key, default)
            if v is default:
                return v
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise PolicyError(f"{key} must be an integer {low}-{high}")
            return v

        canary = uint("canary", 0)
        wave = body.get("wave")
        wave = None if wave is None else Amount.parse(wave, "wave")
        if wave is not None and wave.of(100) == 0:
            raise PolicyError("wave must be at least one device")
        rate = body.get("success_rate", DEFAULT_SUCCESS_RATE)
        if (not isinstance(rate, (int, float)) or isinstance(rate, bool)
                or not 0 <= rate <= 100):
            raise PolicyError("success_rate must be a percentage 0-100")
        mf = body.get("max_failures")
        mf = None if mf is None else Amount.parse(mf, "max_failures")
        max_downloads = uint("max_downloads", None, 1)
        defer = uint("defer", DEFAULT_DEFER, 1, MAX_DEFER)
        offer_timeout = uint("offer_timeout", DEFAULT_OFFER_TIMEOUT, 1, MAX_DEFER)
        w = body.get("window")
        window = None
        if w is not None:
            if not isinstance(w, dict):
                raise PolicyError("window must be a map {start, duration, tz}")
            unknown = set(w) - {"start", "duration", "tz"}
            if unknown:
                raise PolicyError(f"window has unknown field(s) {', '.join(sorted(map(str, unknown)))}")
            window = Window(w.get("start"), w.get("duration"), w.get("tz", "UTC"))
        return cls(canary, wave, float(rate), mf, max_downloads, defer, window, offer_timeout)

    def to_json(self) -> dict[str, Any]:
        """Stored in the campaign row and shown in the API (amounts as text: "25%", "5")."""
        d: dict[str, Any] = {"canary": self.canary, "success_rate": self.success_rate,
                             "defer": self.defer, "offer_timeout": self.offer_timeout}
        if self.wave is not None:
            d["wave"] = self.wave.text()
        if self.max_failures is not None:
            d["max_failures"] = self.max_failures.text()
        if self.max_downloads is not None:
            d["max_downloads"] = self.max_downloads
        if self.window is not None:
            d["window"] = asdict(self.window)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Policy:
        return cls.from_body(d)


def phase_sizes(policy: Policy, total: int) -> list[int]:
    """Sizes of the phases, in order; they add up to ``total``."""
    sizes: list[int] = []
    left = total
    if policy.canary and left:
        sizes.append(min(policy.canary, left))
        left -= sizes[-1]
    if policy.wave is None:
        if left:
            sizes.append(left)
    else:
        step = max(1, policy.wave.of(total))
        while left:
            sizes.append(min(step, left))
            left -= sizes[-1]
    return sizes or [0]


def phase_name(k: int, policy: Policy) -> str:
    if not policy.canary and policy.wave is None:
        return "all"  # one phase: no "wave 1" label on a campaign without phases
    if policy.canary:
        return "canary" if k == 0 else f"wave {k}"
    return f"wave {k + 1}"


@dataclass
class PhaseStats:
    """Job counts of one phase: succeeded, failed (failed or timed out), cancelled, active."""

    total: int = 0
    succeeded: int = 0
    skipped: int = 0  # already ran the image or a newer one: counts as done for the gate
    failed: int = 0
    cancelled: int = 0
    active: int = 0
    downloading: int = 0  # offered or downloading (holds a download slot)

    @property
    def final(self) -> bool:
        return self.active == 0

    def needed(self, policy: Policy) -> int:
        """Successes this phase needs before the next one starts."""
        return math.ceil(policy.success_rate * self.total / 100 - 1e-9)


@dataclass
class Decision:
    released: int  # highest phase index released
    pause: str | None = None  # reason to pause, None to keep going
    newly: list[int] = field(default_factory=list)  # phases released by this decision


def failures(phases: list[PhaseStats], released: int) -> int:
    return sum(p.failed for p in phases[:released + 1])


def threshold_reached(policy: Policy, phases: list[PhaseStats], released: int,
                      acknowledged: int) -> str | None:
    """Reason to pause when new failures reach ``max_failures``, else None."""
    if policy.max_failures is None:
        return None
    new = failures(phases, released) - acknowledged
    if new <= 0:
        return None
    out = sum(p.total for p in phases[:released + 1])
    mf = policy.max_failures
    if mf.count is not None:
        if new >= mf.count:
            return f"{new} failure(s) reached the threshold of {mf.count}"
        return None
    assert mf.percent is not None
    if new * 100 >= mf.percent * out:
        return (f"{new} failure(s) of {out} released device(s) reached the threshold of "
                f"{mf.percent:g}%")
    return None


def decide(policy: Policy, phases: list[PhaseStats], released: int, acknowledged: int) -> Decision:
    """For a running campaign: which phases to release now, or why to pause."""
    reason = threshold_reached(policy, phases, released, acknowledged)
    if reason is not None:
        return Decision(released, pause=reason)
    d = Decision(released)
    while d.released + 1 < len(phases):
        p = phases[d.released]
        if p.succeeded + p.skipped >= p.needed(policy):
            d.released += 1
            d.newly.append(d.released)
            continue
        if p.final:
            d.pause = (f"{phase_name(d.released, policy)}: {p.succeeded} of {p.total} succeeded, "
                       f"below the success rate of {policy.success_rate:g}%")
        break
    return d


def on_resume(policy: Policy, phases: list[PhaseStats], released: int) -> int:
    """Released phase after the operator resumes: a phase that stalled below its success rate
    (all final) is passed over; otherwise nothing changes."""
    if released + 1 < len(phases):
        p = phases[released]
        if p.final and p.succeeded + p.skipped < p.needed(policy):
            return released + 1
    return released


def over_cap(downloading: int, cap: int | None) -> bool:
    return cap is not None and downloading >= cap


def defer_seconds(policy: Policy, now: float, downloading_campaign: int, downloading_all: int,
                  gateway_cap: int | None) -> tuple[int, str] | None:
    """(seconds, why) a device with a released job must wait before its offer, or None."""
    w = policy.window
    if w is not None and not w.is_open(now):
        wait = w.next_open(now) - now
        return max(1, min(MAX_DEFER, math.ceil(wait))), OUTSIDE_WINDOW
    if over_cap(downloading_campaign, policy.max_downloads):
        return policy.defer, f"campaign download cap {policy.max_downloads} reached"
    if over_cap(downloading_all, gateway_cap):
        return policy.defer, f"gateway download cap {gateway_cap} reached"
    return None
