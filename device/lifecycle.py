"""The update lifecycle of one device: every transition the agent may take, in one table.

Everything that moves the agent's state lives here (h11 ``_state.py`` style); the agent calls
``step(state, event)`` and never assigns a state by hand, so the table below is the whole
truth. ``docs/device.md`` embeds it as Markdown (``tests/test_agent_lifecycle.py`` renders and
compares it: the renderer's bytecode would sit in a board's heap for nothing).

States keep the LwM2M object 5 numbers (``const.ST_*``). UPDATING covers both "installed,
reboot due" and "booted the new image, not confirmed yet": the boot check tells them apart.

Events are small ints (16-31, never a state's number) and a transition's key is one int,
``state << 5 | event``: no tuple per entry and no event string in a board's heap (~0.9 KiB on
the 64-bit unix port). ``event_name`` gives the name for logs.
"""

from . import const

IDLE = const.ST_IDLE
DOWNLOADING = const.ST_DOWNLOADING
DOWNLOADED = const.ST_DOWNLOADED
UPDATING = const.ST_UPDATING

# Events: what happened.
ACCEPT = 16  # an UPDATE command whose manifest passed manifest.check
REFUSE = 17  # an UPDATE command whose manifest was refused (result: the reason)
BLOCK = 18  # a block written (progress)
RESTART = 19  # the image changed under us (ETag) or a newer job replaced it: from zero
COMPLETE = 20  # all bytes in, size and SHA-256 match
CORRUPT = 21  # all bytes in, size or SHA-256 do not match
FAIL = 22  # the download cannot go on (image gone, no space)
CANCEL = 23  # a CANCEL command for this job
DEFER = 24  # an UPDATE command the device cannot take now (``may_update``: low battery)
INSTALL = 25  # the slot is marked to boot next
BOOT_WAIT = 26  # the new image runs, its self-test has not decided yet
CONFIRM = 27  # the new image passed its self-test and is kept
ROLLBACK = 28  # the new image failed, ran twice unconfirmed, or passed its deadline

# state << 5 | event -> next state
TABLE = {
    IDLE << 5 | ACCEPT: DOWNLOADING,
    IDLE << 5 | REFUSE: IDLE,
    IDLE << 5 | DEFER: IDLE,
    DOWNLOADING << 5 | BLOCK: DOWNLOADING,
    DOWNLOADING << 5 | RESTART: DOWNLOADING,
    DOWNLOADING << 5 | ACCEPT: DOWNLOADING,  # a new job replaces the one in flight
    DOWNLOADING << 5 | REFUSE: IDLE,  # a new job replaced this one, and its manifest was refused
    DOWNLOADING << 5 | COMPLETE: DOWNLOADED,
    DOWNLOADING << 5 | CORRUPT: IDLE,
    DOWNLOADING << 5 | FAIL: IDLE,
    DOWNLOADING << 5 | CANCEL: IDLE,
    DOWNLOADED << 5 | INSTALL: UPDATING,
    DOWNLOADED << 5 | CANCEL: IDLE,
    DOWNLOADED << 5 | REFUSE: IDLE,  # verified, but not installable (a bundle that will not unpack)
    UPDATING << 5 | BOOT_WAIT: UPDATING,
    UPDATING << 5 | CONFIRM: IDLE,
    UPDATING << 5 | ROLLBACK: IDLE,
}

# The result a transition leaves for the next report (None: keep the current one).
RESULTS = {
    ACCEPT: const.RES_INITIAL,
    COMPLETE: const.RES_INITIAL,
    CORRUPT: const.RES_INTEGRITY_FAILURE,
    CANCEL: const.RES_CANCELLED,
    DEFER: const.RES_DEFERRED,
    CONFIRM: const.RES_SUCCESS,
    ROLLBACK: const.RES_ROLLED_BACK,
}


class LifecycleError(Exception):
    pass


def step(state, event):
    """Next state for ``event`` in ``state``; a missing entry is a bug, never ignored."""
    try:
        return TABLE[state << 5 | event]
    except KeyError:
        raise LifecycleError("no transition from state %d on %s" % (state, event_name(event)))


def event_name(event):
    """``BOOT_WAIT`` -> "boot_wait" (logs, docs)."""
    for k, v in globals().items():
        if v == event and type(v) is int and v >= 16 and k.isupper():
            return k.lower()
    return str(event)
