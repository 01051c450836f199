"""The rollout policy (gateway/rollout.py) on its own: phases, gates, threshold, windows, caps."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rollout import (
    Amount,
    PhaseStats,
    Policy,
    PolicyError,
    Window,
    decide,
    defer_seconds,
    on_resume,
    phase_sizes,
    threshold_reached,
)

PARIS = ZoneInfo("Europe/Paris")


def at(*args: int, tz: ZoneInfo = PARIS) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


# ---- amounts and policy parsing -------------------------------------------------------------
def test_amounts():
    assert Amount.parse(5, "x") == Amount(count=5)
    assert Amount.parse("5", "x") == Amount(count=5)
    assert Amount.parse("25%", "x") == Amount(percent=25.0)
    assert Amount.parse("25%", "x").of(200) == 50
    assert Amount.parse("25%", "x").of(1) == 1  # rounds up: a wave is never empty
    assert Amount.parse("5%", "x").of(200) == 10
    assert Amount.parse("12.5%", "x").text() == "12.5%"
    for bad in (-1, "-3", "101%", "abc", True, 1.5, None, "nan%"):
        with pytest.raises(PolicyError):
            Amount.parse(bad, "wave")


def test_policy_from_body_and_back():
    p = Policy.from_body({"canary": 10, "wave": "25%", "max_failures": "5%", "success_rate": 90,
                          "max_downloads": 20, "defer": 30,
                          "window": {"start": "0 2 * * *", "duration": 7200,
                                     "tz": "Europe/Paris"}})
    assert p.canary == 10 and p.wave == Amount(percent=25.0) and p.max_downloads == 20
    assert Policy.from_json(p.to_json()) == p
    assert Policy.from_body({}) == Policy()
    for bad in ({"canary": -1}, {"canary": "x"}, {"wave": 0}, {"wave": "0%"},
                {"success_rate": 101}, {"max_downloads": 0}, {"defer": 0},
                {"window": "0 2 * * *"}, {"window": {"start": "0 2 * *", "duration": 60}},
                {"window": {"start": "0 25 * * *", "duration": 60}},
                {"window": {"start": "0 2 * * *", "duration": 0}},
                {"window": {"start": "0 2 * * *", "duration": 60, "tz": "Mars/Olympus"}},
                {"window": {"start": "0 2 * * *", "duration": 60, "when": 1}}):
        with pytest.raises(PolicyError):
            Policy.from_body(bad)


# ---- phases ---------------------------------------------------------------------------------
def test_phase_sizes_examples():
    assert phase_sizes(Policy(), 7) == [7]  # the default: everyone at once
    assert phase_sizes(Policy(canary=10, wave=Amount(percent=25)), 200) == [10, 50, 50, 50, 40]
    assert phase_sizes(Policy(canary=3), 10) == [3, 7]
    assert phase_sizes(Policy(canary=30), 10) == [10]
    assert phase_sizes(Policy(wave=Amount(count=4)), 10) == [4, 4, 2]


@given(total=st.integers(0, 5000), canary=st.integers(0, 100),
       wave=st.one_of(st.none(), st.integers(1, 600).map(lambda n: Amount(count=n)),
                      st.floats(0.1, 100).map(lambda p: Amount(percent=p))))
def test_phase_sizes_cover_everyone(total, canary, wave):
    policy = Policy(canary=canary, wave=wave)
    sizes = phase_sizes(policy, total)
    assert sum(sizes) == total
    assert all(s > 0 for s in sizes) or sizes == [0]
    if canary and total:
        assert sizes[0] == min(canary, total)
    if wave is not None:
        rest = sizes[1:] if canary else sizes
        assert all(s <= max(1, wave.of(total)) for s in rest)


# ---- gates and the error threshold ----------------------------------------------------------
def stats(total, succeeded=0, failed=0, active=None):
    return PhaseStats(total=total, succeeded=succeeded, failed=failed,
                      active=total - succeeded - failed if active is None else active)


def test_next_phase_waits_for_the_success_rate():
    p = Policy(canary=2, wave=Amount(count=4), success_rate=100)
    phases = [stats(2, 1), stats(4), stats(4)]
    assert decide(p, phases, 0, 0).released == 0
    phases[0] = stats(2, 2)
    d = decide(p, phases, 0, 0)
    assert (d.released, d.newly, d.pause) == (1, [1], None)
    # 75% is enough at success_rate 75, even while one job is still active
    p75 = Policy(canary=2, wave=Amount(count=4), success_rate=75)
    assert decide(p75, [stats(2, 2), stats(4, 3), stats(4)], 1, 0).released == 2


def test_a_phase_below_its_rate_pauses_and_resume_passes_it():
    p = Policy(canary=4, success_rate=100)
    phases = [stats(4, 3, 1), stats(10)]
    d = decide(p, phases, 0, 0)
    assert d.released == 0 and "canary: 3 of 4 succeeded" in d.pause
    assert on_resume(p, phases, 0) == 1
    assert on_resume(p, [stats(4, 3, 0, active=1), stats(10)], 0) == 0  # not stalled: no skip


def test_threshold_count_and_percent():
    p = Policy(canary=10, wave=Amount(percent=25), max_failures=Amount(count=3))
    phases = [stats(10, 8, 2), stats(50)]
    assert threshold_reached(p, phases, 0, 0) is None
    phases[0] = stats(10, 7, 3)
    assert "3 failure(s) reached the threshold of 3" in decide(p, phases, 0, 0).pause
    assert "below the success rate" in decide(p, phases, 0, 3).pause  # acknowledged; stalled
    assert decide(p, [stats(10, 5, 3), stats(50)], 0, 3).pause is None  # 2 still running
    pct = Policy(canary=10, wave=Amount(percent=25), max_failures=Amount(percent=5))
    # 5% of the released devices: 1 of the 10 canaries already is 10%
    assert decide(pct, [stats(10, 9, 1), stats(50)], 0, 0).pause is not None
    # canary clean, wave 1 out: 60 released, 3 failures = 5%
    assert decide(pct, [stats(10, 10), stats(50, 20, 2), stats(50)], 1, 0).pause is None
    assert decide(pct, [stats(10, 10), stats(50, 20, 3), stats(50)], 1, 0).pause is not None
    zero = Policy(max_failures=Amount(count=0))
    assert decide(zero, [stats(5, 1)], 0, 0).pause is None  # no failure yet
    assert decide(zero, [stats(5, 1, 1)], 0, 0).pause is not None


@settings(max_examples=200)
@given(data=st.data())
def test_decide_never_skips_a_phase_that_did_not_meet_its_rate(data):
    n = data.draw(st.integers(1, 6))
    rate = data.draw(st.floats(0, 100))
    p = Policy(canary=1, wave=Amount(count=3), success_rate=rate)
    phases = []
    for _ in range(n):
        total = data.draw(st.integers(1, 20))
        ok = data.draw(st.integers(0, total))
        bad = data.draw(st.integers(0, total - ok))
        phases.append(stats(total, ok, bad))
    d = decide(p, phases, 0, 0)
    assert 0 <= d.released < n
    for k in range(d.released):
        assert phases[k].succeeded >= phases[k].needed(p)
    if d.pause is None and d.released + 1 < n:
        assert not phases[d.released].final  # waiting on active jobs, not stuck


# ---- windows --------------------------------------------------------------------------------
def test_window_open_and_next_open():
    w = Window("0 2 * * *", 3600, "Europe/Paris")
    assert not w.is_open(at(2026, 6, 1, 1, 59, 59))
    assert w.is_open(at(2026, 6, 1, 2, 0, 0)) and w.is_open(at(2026, 6, 1, 2, 59, 59))
    assert not w.is_open(at(2026, 6, 1, 3, 0, 0))
    assert w.next_open(at(2026, 6, 1, 3, 0, 0)) == at(2026, 6, 2, 2, 0, 0)
    assert w.next_open(at(2026, 6, 1, 2, 30)) == at(2026, 6, 1, 2, 30)
    assert w.closes(at(2026, 6, 1, 2, 30)) == at(2026, 6, 1, 3, 0)
    # the same local time in another zone is another instant
    utc = Window("0 2 * * *", 3600, "UTC")
    assert utc.is_open(at(2026, 6, 1, 4, 30)) and not w.is_open(at(2026, 6, 1, 4, 30))


def test_window_across_midnight_weekdays_and_dst():
    w = Window("0 22 * * 1-5", 4 * 3600, "Europe/Paris")  # Mon-Fri 22:00 for 4 h
    assert w.is_open(at(2026, 6, 2, 1, 0))  # Tuesday 01:00: Monday's window
    assert not w.is_open(at(2026, 6, 7, 1, 0))  # Sunday 01:00: Saturday had none
    assert w.next_open(at(2026, 6, 6, 12, 0)) == at(2026, 6, 8, 22, 0)  # Sat -> Mon 22:00
    # 2026-03-29: Paris springs forward 02:00 -> 03:00; a 01:30 window of 1 h closes 03:30 CEST
    d = Window("30 1 * * *", 3600, "Europe/Paris")
    start = at(2026, 3, 29, 1, 30)
    assert d.is_open(start + 3599) and not d.is_open(start + 3600)


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1_700_000_000, 1_900_000_000), minute=st.integers(0, 59),
       hour=st.integers(0, 23), duration=st.integers(60, 30 * 3600),
       tz=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]))
def test_next_open_is_open_and_nothing_opens_before_it(t, minute, hour, duration, tz):
    w = Window(f"{minute} {hour} * * *", duration, tz)
    nxt = w.next_open(t)
    assert nxt >= t and w.is_open(nxt)
    if nxt > t:  # closed until then: sample the gap
        for k in range(1, 8):
            assert not w.is_open(t + (nxt - t) * k / 8 - 1) or t + (nxt - t) * k / 8 - 1 < t
        assert w.is_open(w.next_open(nxt + timedelta(days=1).total_seconds()))


# ---- caps -----------------------------------------------------------------------------------
def test_defer_seconds():
    now = at(2026, 6, 1, 12, 0)
    assert defer_seconds(Policy(), now, 100, 1000, None) is None
    assert defer_seconds(Policy(max_downloads=5, defer=30), now, 4, 4, None) is None
    assert defer_seconds(Policy(max_downloads=5, defer=30), now, 5, 5, None)[0] == 30
    assert defer_seconds(Policy(), now, 0, 8, 8)[1] == "gateway download cap 8 reached"
    closed = Policy(window=Window("0 13 * * *", 600, "Europe/Paris"))
    wait, why = defer_seconds(closed, now, 0, 0, None)
    assert wait == 3600 and "window" in why
    far = Policy(window=Window("0 0 1 1 *", 600, "UTC"))  # once a year: capped at a day
    assert defer_seconds(far, now, 0, 0, None)[0] == 86400
