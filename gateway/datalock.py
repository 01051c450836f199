"""One gateway per data directory: an exclusive ``flock`` on ``DATA/gateway.lock``.

Two gateways on one database would each cache state the other changes (observations, upload
state, the sweeper) and both answer devices; SQLite's own locking keeps the file consistent but
not the fleet. The lock is held for the process's life and released by the kernel when it ends,
however it ends (no stale lock after kill -9). The file holds the owner's pid, for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "gateway.lock"


class Locked(Exception):
    """Another process holds the lock: its message names the directory and the pid."""


def lock(data: Path) -> int:
    """Take the lock (creating ``data`` 0700 if needed); returns the fd to keep open."""
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise Locked(f"data directory {data} is in use by another gateway (pid {owner})") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
