"""The campaign pictures' arithmetic (gateway/web/charts.py) on a hand-made transition log."""

from __future__ import annotations

from gateway.web import charts


def test_timeline_walks_back_from_todays_counts() -> None:
    # 2 jobs: job 1 offered at t=10, downloading 11, succeeded 15; job 2 offered 12, failed 13,
    # retried as job 3 at 14 (queued again)
    edges = [(1, 10.0, 1, "queued", "offered"), (2, 11.0, 1, "offered", "downloading"),
             (3, 12.0, 2, "queued", "offered"), (4, 13.0, 2, "offered", "failed"),
             (5, 14.0, 2, "failed", "retried"), (6, 15.0, 1, "downloading", "succeeded")]
    tl = charts.timeline(edges, {"succeeded": 1, "queued": 1}, created=0.0, now=20.0)
    assert tl["time"] == [0.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 20.0]
    assert tl["queued"] == [2, 1, 1, 0, 0, 1, 1, 1]
    assert tl["offered"] == [0, 1, 0, 1, 0, 0, 0, 0]
    assert tl["failed"] == [0, 0, 0, 0, 1, 0, 0, 0]
    assert tl["succeeded"] == [0, 0, 0, 0, 0, 0, 1, 1]
    assert "cancelled" not in tl  # states that never held a job are left out


def test_timeline_samples_long_logs_and_download_histogram() -> None:
    n = 1000
    edges = []
    for j in range(n):
        edges.append((2 * j, float(j), j, "queued", "offered"))
        edges.append((2 * j + 1, j + 0.5 + (j % 10), j, "offered", "succeeded"))
    edges.sort(key=lambda e: e[1])
    tl = charts.timeline(edges, {"succeeded": n}, created=-1.0, now=2000.0)
    assert len(tl["time"]) == charts.MAX_POINTS
    assert tl["queued"][0] == n and tl["succeeded"][-1] == n
    assert all(q + o + s == n for q, o, s in zip(tl["queued"], tl["offered"], tl["succeeded"]))
    hist = charts.histogram(charts.download_times(edges), bins=10)
    assert sum(hist["counts"]) == n and hist["counts"][0] == 100 and hist["edges"][0] == 0.0
