"""A command from the gateway, acted on: DEFER (when to come back), CANCEL (the job in
flight), UPDATE (a new job: its offer is checked by offer.py).

Its own module, imported by ``Agent._handle`` when a report's answer carries a command and
dropped after: most answers carry none, and a download never holds this code.
"""

from . import const, lifecycle
from .agent import DOWNLOADED, DOWNLOADING, _collect, _drop

MAX_WAIT = 86400  # seconds: a DEFER asks for at most a day (no command may put a device to
# sleep for ever, nor hand it a non-number to sleep on)


def handle(a, cmd):
    """Act on ``cmd`` (a map); return what the wake does next (None: go on)."""
    op = cmd.get(const.C_OP, const.OP_NONE)
    s = a.s
    if op == const.OP_DEFER:
        wait = cmd.get(const.C_WAIT)
        if isinstance(wait, int) and not isinstance(wait, bool) and wait >= 0:
            a.wait = min(wait, MAX_WAIT)
        return None
    if op == const.OP_CANCEL:
        job = cmd.get(const.C_JOB, s["job"])
        if s["state"] in (DOWNLOADING, DOWNLOADED) and job == s["job"]:
            a._finish(lifecycle.CANCEL)
        return None
    if op != const.OP_UPDATE:
        return None
    if s["state"] in (DOWNLOADING, DOWNLOADED) and cmd.get(const.C_JOB) == s["job"]:
        return None  # the job in flight, sent again (the offer's code stays on flash)
    from . import offer  # an UPDATE: checked there (the job, the state, the manifest)

    try:
        return offer.take(a, cmd)
    finally:
        offer = None
        _drop("offer", "cbordecode")
        _collect()
