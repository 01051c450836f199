"""The two campaign pictures, computed on the server from the event log so that a campaign
of 10,000 jobs costs the browser a few hundred numbers: jobs by state over time, and a
histogram of download times (offer to success) per device."""

from __future__ import annotations

import math
from collections.abc import Sequence

from proto.codes import JobState

STATES = (JobState.QUEUED, JobState.OFFERED, JobState.DOWNLOADING, JobState.DOWNLOADED,
          JobState.UPDATING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
          JobState.TIMED_OUT)
MAX_POINTS = 200
BINS = 20

Edge = tuple[int, float, int, str, str]  # event id, time, job, from, to


def timeline(edges: Sequence[Edge], now_counts: dict[str, int], created: float,
             now: float) -> dict[str, list[float]]:
    """Jobs per state at up to ``MAX_POINTS`` times from ``created`` to ``now``: walk the
    transitions backwards from today's counts (exact, whatever the log's start looks like).
    A retry ("failed -> retried") removed a failed job and queued a new one. One pass over the
    transitions, whatever their number."""
    exact = len(edges) + 2 <= MAX_POINTS
    if exact:  # every change: sample i > 0 is the state right after transition i - 1
        times = [created, *(e[1] for e in edges), now]
    else:  # evenly spaced samples: the state at each
        span = max(now - created, 1e-6)
        times = [created + span * k / (MAX_POINTS - 1) for k in range(MAX_POINTS)]
    counts = {s: now_counts.get(s, 0) for s in STATES}
    cols: dict[str, list[float]] = {s: [0] * len(times) for s in STATES}
    k = len(edges) - 1
    for i in range(len(times) - 1, -1, -1):
        t = times[i]
        while k >= 0 and (k >= i if exact else edges[k][1] > t):
            _, _, _, a, b = edges[k]  # undo the transitions after this sample
            if b == "retried":
                counts[JobState.QUEUED] -= 1
            elif b in counts:
                counts[b] -= 1
            if a in counts:
                counts[a] += 1
            k -= 1
        for s in STATES:
            cols[s][i] = counts[s]
    return {"time": times, **{s: v for s, v in cols.items() if any(v)}}


def download_times(edges: Sequence[Edge]) -> list[float]:
    """Seconds from a job's last offer to its success, for each succeeded job."""
    offered: dict[int, float] = {}
    out = []
    for _, t, job, _, b in edges:
        if b == JobState.OFFERED:
            offered[job] = t
        elif b == JobState.SUCCEEDED and job in offered:
            out.append(t - offered.pop(job))
    return out


def histogram(values: Sequence[float], bins: int = BINS) -> dict[str, list[float]]:
    """Equal-width bins from 0 to the largest value: {"edges": lower edges, "counts": ...}."""
    if not values:
        return {"edges": [], "counts": []}
    top = max(values)
    width = top / bins if top > 0 else 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, math.floor(v / width))] += 1
    return {"edges": [k * width for k in range(bins)], "counts": counts}
