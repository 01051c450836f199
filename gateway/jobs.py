"""Everything that moves a job from one state to another lives in this file.

The transition a device report causes is a table lookup (``report_target``); ``JobState``
values come from the contract. Lifecycle::

    queued ──offer──▶ offered ──DOWNLOADING──▶ downloading ──DOWNLOADED──▶ downloaded
       │  ▲              │  │                                                 │
       │  └───DEFERRED───┘  └───────────── any failure result ──▶ failed      UPDATING
       │                 │                                                    ▼
       └──(running seq >= image seq)──────────────────────▶ succeeded ◀── IDLE+SUCCESS+seq
    any active ──cancel──▶ cancelled          any active ──deadline──▶ timed_out
    timed_out ──late report──▶ succeeded | failed (same table; event "late report"; a late
                               report of an intermediate state leaves it timed_out)
    cancelled ──late success──▶ succeeded (the device finished the download before it heard of
                               the cancel and installed it: the record follows the device)

A queued job is offered on its device's next wake once its phase is released and its campaign
runs, unless a maintenance window or a download cap says "come back in N s" (rollout.py). An
offer whose download has not started within the campaign's ``offer_timeout`` goes back to
queued (fleet.py's sweep), freeing its download slot.
"""

from __future__ import annotations

from proto.codes import JobState, Result, State

#: Results that do not end a job: nothing happened yet, success, or "ask me later".
NON_FAILURE = (Result.INITIAL, Result.SUCCESS, Result.DEFERRED)

#: Job states a device report may still move (timed_out: a late report is reconciled;
#: cancelled: only a late success, the device runs the image).
REPORTABLE = (*JobState.ACTIVE, JobState.TIMED_OUT, JobState.CANCELLED)

#: Device state -> job state while no result ends the job.
STATE_TO_JOB = {
    State.DOWNLOADING: JobState.DOWNLOADING,
    State.DOWNLOADED: JobState.DOWNLOADED,
    State.UPDATING: JobState.UPDATING,
}


def report_target(state: int, result: int, seq: int, image_seq: int) -> tuple[str, int | None] | None:
    """(new job state, result to record) for a report about a job, or None for no change."""
    if result not in NON_FAILURE:
        return JobState.FAILED, result
    if result == Result.DEFERRED:  # the device said "later" (battery): offered again later
        return JobState.QUEUED, Result.DEFERRED
    if state in STATE_TO_JOB:
        return STATE_TO_JOB[State(state)], None
    if state == State.IDLE and seq >= image_seq:  # booted it (SUCCESS) or already ran it
        return JobState.SUCCEEDED, Result.SUCCESS
    return None

