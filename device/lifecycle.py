"""The update lifecycle of one device: every transition the agent may take, in one table.

Everything that moves the agent's state lives here (h11 ``_state.py`` style); the agent calls
``step(state, event)`` and never assigns a state by hand, so the table below is the whole
truth. ``docs/device.md`` embeds it as Markdown (``tests/test_agent_lifecycle.py`` renders and
compares it: the renderer's bytecode would sit in a board's heap for nothing).

States keep the LwM2M object 5 numbers (``const.ST_*``). UPDATING covers both "installed,
reboot due" and "booted the new image, not confirmed yet": the boot check tells them apart.
"""

from . import const

IDLE = const.ST_IDLE
DOWNLOADING = const.ST_DOWNLOADING
DOWNLOADED = const.ST_DOWNLOADED
UPDATING = const.ST_UPDATING

NAMES = {IDLE: "idle", DOWNLOADING: "downloading", DOWNLOADED: "downloaded", UPDATING: "updating"}

# Events: what happened.
ACCEPT = "accept"  # an UPDATE command whose manifest passed manifest.check
REFUSE = "refuse"  # an UPDATE command whose manifest was refused (result: the reason)
BLOCK = "block"  # a block written (progress)
RESTART = "restart"  # the image changed under us (ETag) or a newer job replaced it: from zero
COMPLETE = "complete"  # all bytes in, size and SHA-256 match
CORRUPT = "corrupt"  # all bytes in, size or SHA-256 do not match
FAIL = "fail"  # the download cannot go on (image gone, no space)
CANCEL = "cancel"  # a CANCEL command for this job
DEFER = "defer"  # an UPDATE command the device cannot take now (``may_update``: low battery)
INSTALL = "install"  # the slot is marked to boot next
BOOT_WAIT = "boot_wait"  # the new image runs, its self-test has not decided yet
CONFIRM = "confirm"  # the new image passed its self-test and is kept
ROLLBACK = "rollback"  # the new image failed, ran twice unconfirmed, or passed its deadline

# (state, event) -> next state
TABLE = {
    (IDLE, ACCEPT): DOWNLOADING,
    (IDLE, REFUSE): IDLE,
    (IDLE, DEFER): IDLE,
    (DOWNLOADING, BLOCK): DOWNLOADING,
    (DOWNLOADING, RESTART): DOWNLOADING,
    (DOWNLOADING, ACCEPT): DOWNLOADING,  # a new job replaces the one in flight
    (DOWNLOADING, REFUSE): IDLE,  # a new job replaced this one, and its manifest was refused
    (DOWNLOADING, COMPLETE): DOWNLOADED,
    (DOWNLOADING, CORRUPT): IDLE,
    (DOWNLOADING, FAIL): IDLE,
    (DOWNLOADING, CANCEL): IDLE,
    (DOWNLOADED, INSTALL): UPDATING,
    (DOWNLOADED, CANCEL): IDLE,
    (DOWNLOADED, REFUSE): IDLE,  # verified, but not installable (a bundle that will not unpack)
    (UPDATING, BOOT_WAIT): UPDATING,
    (UPDATING, CONFIRM): IDLE,
    (UPDATING, ROLLBACK): IDLE,
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
        return TABLE[(state, event)]
    except KeyError:
        raise LifecycleError("no transition from %s on %s" % (NAMES.get(state, state), event))
