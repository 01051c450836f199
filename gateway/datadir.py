"""Keys at rest: the data directory is the gateway's alone.

The database holds device report keys in clear (the gateway must compute their MACs) and the
OSCORE credentials live beside it, so the directory is 0700 and the database with its WAL and
shared-memory files 0600. The process umask is 077 from the start, so everything the gateway
creates is private; a directory or database made wider by hand (or by an older version, which
left them 0755/0644) is narrowed at start with one log line, and a mode that cannot be fixed
(another owner) refuses the start.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("fota.gateway")

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
DATABASE_FILES = ("gateway.sqlite3", "gateway.sqlite3-wal", "gateway.sqlite3-shm")


class Unsafe(Exception):
    """A mode that could not be narrowed: the gateway does not start."""


def secure(data: Path) -> None:
    """Set the umask, create ``data`` if needed, and narrow wider modes (Unsafe if it can't)."""
    os.umask(UMASK)
    data.mkdir(parents=True, exist_ok=True)
    _narrow(data, DIR_MODE)
    for name in DATABASE_FILES:
        _narrow(data / name, FILE_MODE)


def _narrow(path: Path, mode: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    was = stat.S_IMODE(st.st_mode)
    if was & ~mode & 0o777 == 0:
        return
    try:
        os.chmod(path, mode)
    except OSError as e:
        raise Unsafe(f"{path} is {was:04o} (readable by others) and cannot be narrowed to "
                     f"{mode:04o}: {e.strerror or e}") from None
    log.warning("%s was %04o: narrowed to %04o (it holds device keys)", path, was, mode,
                extra={"fields": {"event": "mode_fixed", "path": str(path)}})
