"""The gateway's job transition table: docs/protocol.md embeds it, a missing entry raises, and
device reports map to its events."""

from pathlib import Path

import pytest

from gateway import jobs
from proto.codes import JobState, Result, State

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_protocol_doc_embeds_the_table():
    text = DOC.read_text()
    begin, end = "<!-- jobs:begin -->\n", "<!-- jobs:end -->"
    embedded = text[text.index(begin) + len(begin):text.index(end)]
    assert embedded == jobs.render(), "regenerate: python -m gateway.jobs (docs/protocol.md)"


def test_a_missing_transition_raises():
    with pytest.raises(jobs.JobTransitionError, match="from succeeded on cancel"):
        jobs.step(JobState.SUCCEEDED, jobs.CANCEL)
    with pytest.raises(jobs.JobTransitionError, match="from updating on cancel"):
        jobs.step(JobState.UPDATING, jobs.CANCEL)  # installing: the agent finishes by itself
    assert jobs.step(JobState.DOWNLOADING, jobs.CANCEL) == JobState.CANCELLED
    assert jobs.step(JobState.OFFERED, jobs.OFFER) is None  # the offer's clock keeps running


def test_late_reports_only_learn_the_outcome():
    assert jobs.step(JobState.TIMED_OUT, jobs.SUCCESS) == JobState.SUCCEEDED
    assert jobs.step(JobState.TIMED_OUT, jobs.FAIL) == JobState.FAILED
    assert jobs.step(JobState.TIMED_OUT, jobs.DOWNLOADING) is None
    assert jobs.step(JobState.CANCELLED, jobs.SUCCESS) == JobState.SUCCEEDED
    assert jobs.step(JobState.CANCELLED, jobs.FAIL) is None
    assert set(jobs.REPORTABLE) == {*JobState.ACTIVE, JobState.TIMED_OUT, JobState.CANCELLED}
    # final outcomes never move again
    assert not [k for k in jobs.TABLE if k[0] in (JobState.SUCCEEDED, JobState.FAILED)]


def test_reports_map_to_events():
    ev = jobs.report_event
    assert ev(State.DOWNLOADING, Result.INITIAL, 1, 2) == jobs.DOWNLOADING
    assert ev(State.IDLE, Result.SUCCESS, 2, 2) == jobs.SUCCESS
    assert ev(State.IDLE, Result.INITIAL, 3, 2) == jobs.SUCCESS  # already runs a newer image
    assert ev(State.IDLE, Result.INITIAL, 1, 2) is None  # nothing happened yet
    assert ev(State.DOWNLOADING, Result.DEFERRED, 1, 2) == jobs.DEFER
    assert ev(State.IDLE, Result.INTEGRITY_FAILURE, 1, 2) == jobs.FAIL
