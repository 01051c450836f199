"""Device states, update results and command operations.

States and results keep the LwM2M Firmware Update object (5) numbering so that an operator who
knows LwM2M reads ours at a glance; results 20 and up are ours (SUIT-style refusals, rollback).
"""

from enum import IntEnum, IntFlag


class State(IntEnum):
    """LwM2M /5/0/3 "State"."""

    IDLE = 0
    DOWNLOADING = 1
    DOWNLOADED = 2
    UPDATING = 3


class Result(IntEnum):
    """LwM2M /5/0/5 "Update Result" (0-11), then ours (20 and up)."""

    INITIAL = 0
    SUCCESS = 1
    NO_SPACE = 2
    OUT_OF_MEMORY = 3
    CONNECTION_LOST = 4
    INTEGRITY_FAILURE = 5
    UNSUPPORTED_IMAGE = 6
    INVALID_URI = 7
    UPDATE_FAILED = 8
    UNSUPPORTED_PROTOCOL = 9
    CANCELLED = 10
    DEFERRED = 11
    ROLLED_BACK = 20
    SIGNATURE_INVALID = 21
    DOWNGRADE_REFUSED = 22
    WRONG_CLASS = 23
    KEY_UNAVAILABLE = 24  # encrypted image, but no key of this device unwraps its content key


class Phase(IntEnum):
    """Where in a wake the device ran out of RAM (report key PHASE, result out_of_memory: a
    transient failure; the device keeps its image and tries again at its next wake)."""

    BOOT = 1
    REPORT = 2
    VERIFY = 3
    DOWNLOAD = 4
    INSTALL = 5


class Op(IntEnum):
    """Command operation carried in a report response (key ``CmdKey.OP``)."""

    NONE = 0
    UPDATE = 1
    CANCEL = 2
    DEFER = 3  # come back after CmdKey.WAIT seconds (windows, concurrency caps)


class Compression(IntEnum):
    """Manifest COMPRESSION: how the bytes sent are packed (before any delta is applied)."""

    NONE = 0
    DEFLATE = 1  # raw deflate segments, window <= 4 KiB (wbits 12), one per 32 KiB of output


class Cap(IntFlag):
    """Report CAPS: what a device can decode; the gateway offers nothing else."""

    DEFLATE = 1  # Compression.DEFLATE
    DELTA = 2  # DELTA_BASE: patches in the format of device/patch.py


class JobState:
    """Gateway-side lifecycle of one device inside one campaign (text: it is shown to people)."""

    QUEUED = "queued"  # not yet told
    OFFERED = "offered"  # manifest handed out in a report response
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    UPDATING = "updating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"  # the device already ran this image's sequence number or a newer one

    ACTIVE = (QUEUED, OFFERED, DOWNLOADING, DOWNLOADED, UPDATING)
    FINAL = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, SKIPPED)


class CampaignState:
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


def result_name(code: int) -> str:
    """Human name for a result code, tolerant of codes from newer devices."""
    try:
        return Result(code).name.lower()
    except ValueError:
        return f"result_{code}"


def phase_name(code: int) -> str:
    try:
        return Phase(code).name.lower()
    except ValueError:
        return f"phase_{code}"


def state_name(code: int) -> str:
    try:
        return State(code).name.lower()
    except ValueError:
        return f"state_{code}"
