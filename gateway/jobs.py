"""Every state change of a job goes through ``step(state, event)`` and this file's table.

``JobState`` values come from the contract. ``fleet.py`` turns what happened (a report, an
offer, a cancel, the sweeper) into an event, asks ``step`` for the next state and never assigns
a state by hand; a missing entry raises ``JobTransitionError`` (a bug, never ignored).
``docs/protocol.md`` embeds ``render()``; a test keeps the two equal
(``python -m gateway.jobs`` prints it).

A queued job is offered on its device's next wake once its phase is released and its campaign
runs, unless a maintenance window or a download cap says "come back in N s" (rollout.py). An
offer whose download has not started within the campaign's ``offer_timeout`` goes back to
queued (fleet.py's sweep), freeing its download slot. A retried job is a new job (new id): a
late report about the old attempt cannot touch it.
"""

from __future__ import annotations

from proto.codes import JobState, Result, State

# Events: what happened to a job.
OFFER = "offer"  # the gateway hands out the manifest (its turn came, or the device lost it)
DOWNLOADING = "downloading"  # the device reports state downloading
DOWNLOADED = "downloaded"  # the device reports state downloaded
UPDATING = "updating"  # the device reports state updating
SUCCESS = "success"  # the device runs the image's seq (idle + success, or it already did)
FAIL = "fail"  # a failure result from the device, or a device of the wrong class
DEFER = "defer"  # the device said "later" (result deferred: low battery)
CANCEL = "cancel"  # the operator cancelled the campaign
DEADLINE = "deadline"  # the campaign's deadline passed (sweeper)
OFFER_EXPIRED = "offer_expired"  # no download within the campaign's offer_timeout (sweeper)
SKIP = "skip"  # the device already runs a newer seq (or the image's, before its offer)
STOP = "stop"  # the image's blob cannot be served: the download stops, the job waits
FALLBACK = "fallback"  # a delta failed on the device: offer it the full image (deltas.py)

#: (state, event) -> next state; None: the job keeps its state and record (ignored).
TABLE: dict[tuple[str, str], str | None] = {}
for _s in JobState.ACTIVE:
    TABLE.update({
        (_s, OFFER): JobState.OFFERED,
        (_s, DOWNLOADING): JobState.DOWNLOADING,  # progress recorded
        (_s, DOWNLOADED): JobState.DOWNLOADED,
        (_s, UPDATING): JobState.UPDATING,
        (_s, SUCCESS): JobState.SUCCEEDED,
        (_s, FAIL): JobState.FAILED,
        # offered again after the campaign's defer time; a queued job hears the device's last
        # word again on each wake until it is offered again
        (_s, DEFER): None if _s == JobState.QUEUED else JobState.QUEUED,
        (_s, DEADLINE): JobState.TIMED_OUT,
    })
    TABLE[(_s, FALLBACK)] = None if _s == JobState.QUEUED else JobState.QUEUED
TABLE[(JobState.OFFERED, OFFER)] = None  # handed out again: the offer's clock keeps running
for _s in (JobState.QUEUED, JobState.OFFERED, JobState.DOWNLOADING):
    # later states are installing: the agent finishes without asking and the job records it
    TABLE[(_s, CANCEL)] = JobState.CANCELLED
TABLE[(JobState.OFFERED, OFFER_EXPIRED)] = JobState.QUEUED  # its download slot frees
TABLE.update({(_s, SKIP): JobState.SKIPPED for _s in JobState.ACTIVE})
# a blob found corrupt or missing: downloads stop (the device is told CANCEL) and wait in the
# queue for the operator's resume; a device with the whole image already installs it
TABLE.update({(JobState.OFFERED, STOP): JobState.QUEUED,
              (JobState.DOWNLOADING, STOP): JobState.QUEUED})
# Past its deadline a job only learns its outcome (a late report, with an event); reviving it
# would have the sweeper time it out again. A cancelled job only follows a device that
# installed the image anyway (it had all of it before it heard of the cancel).
for _s, _fail in ((JobState.TIMED_OUT, JobState.FAILED), (JobState.CANCELLED, None)):
    TABLE.update({(_s, SUCCESS): JobState.SUCCEEDED, (_s, FAIL): _fail, (_s, FALLBACK): _fail})
    TABLE.update({(_s, e): None for e in (DOWNLOADING, DOWNLOADED, UPDATING, DEFER)})
del _s, _fail

#: The result a transition records (None: none); FAIL records the device's result.
RESULTS: dict[str, int] = {SUCCESS: Result.SUCCESS, DEFER: Result.DEFERRED,
                           CANCEL: Result.CANCELLED}

#: Job states a device report may still move: those with an entry for a report event.
REPORTABLE = tuple(dict.fromkeys(s for (s, e) in TABLE if e == SUCCESS))

#: Results that do not end a job: nothing happened yet, success, or "ask me later".
NON_FAILURE = (Result.INITIAL, Result.SUCCESS, Result.DEFERRED)

#: Device state -> event while no result ends the job.
STATE_EVENTS = {
    State.DOWNLOADING: DOWNLOADING,
    State.DOWNLOADED: DOWNLOADED,
    State.UPDATING: UPDATING,
}


class JobTransitionError(Exception):
    pass


def step(state: str, event: str) -> str | None:
    """Next state for ``event`` in ``state`` (None: ignored); a missing entry raises."""
    try:
        return TABLE[(state, event)]
    except KeyError:
        raise JobTransitionError(f"no job transition from {state} on {event}") from None


def report_event(state: int, result: int, seq: int, image_seq: int) -> str | None:
    """The event a device report is about its job, or None (progress at most)."""
    if result == Result.OUT_OF_MEMORY:  # transient: the device keeps its image and retries
        return DEFER if state == State.IDLE else STATE_EVENTS.get(State(state))
    if result not in NON_FAILURE:
        return FAIL
    if result == Result.DEFERRED:
        return DEFER
    if state in STATE_EVENTS:
        return STATE_EVENTS[State(state)]
    if state == State.IDLE and seq >= image_seq:  # booted it (SUCCESS) or already ran it
        return SUCCESS
    return None


def render() -> str:
    """The table as Markdown (embedded in docs/protocol.md): a state per row, an event per
    column; "=" keeps the state and record, "-" has no entry (step raises)."""
    events = list(dict.fromkeys(e for (_, e) in TABLE))
    states = list(dict.fromkeys(s for (s, _) in TABLE))
    out = ["| state \\ event | " + " | ".join(events) + " |",
           "| --- |" + " --- |" * len(events)]
    for s in states:
        cells = [TABLE.get((s, e), "-") or "=" for e in events]
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Result recorded: " + ", ".join(
        f"{e} → {Result(r).name.lower()}" for e, r in RESULTS.items())
        + f", {FAIL} → the device's result (wrong_class when the gateway refuses the device's "
        "class); other transitions record none.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
