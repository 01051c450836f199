"""Firmware blobs on disk, named by their SHA-256: written atomically, read by ``os.pread``.

A blob file is ``DATA/blobs/<64 hex>``. Names are validated as exactly 64 lowercase hex digits
before any path is built, so no request can name a file outside the data directory. Writes go
to a temp file in the same directory, are fsynced, renamed into place and the directory is
fsynced: after a crash a blob is either complete or absent. Serving never holds an image in
RAM. Before the first block of a blob is served after start (or after the file changed: its
inode, size or mtime, looked at once a second), its digest is checked once, so bit rot is
caught before a device downloads garbage.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_HEX64 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
RESTAT_SECONDS = 1.0  # how stale our view of a blob file may be (one stat per blob per second)


class BlobError(Exception):
    """A blob that is missing or does not hash to its name."""


class CorruptBlob(BlobError):
    pass


def valid_digest_hex(name: str) -> bool:
    return bool(_HEX64.fullmatch(name))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Open:
    fd: int
    size: int
    stamp: tuple[int, int, int]  # (inode, size, mtime_ns): a change means verify again
    checked: float  # monotonic time of the last stat


class SharedBlobs(Protocol):
    def get(self, digest_hex: str) -> bytes | None: ...
    def put(self, digest_hex: str, data: bytes) -> None: ...


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        for leftover in self.tmp.iterdir():  # uploads interrupted by a crash
            leftover.unlink(missing_ok=True)
        self._open: dict[str, _Open] = {}
        self._corrupt: dict[str, tuple[int, int, int]] = {}  # name -> stamp found corrupt
        self._unfetchable: dict[str, float] = {}  # name -> when the shared store lacked it
        self._reported: set[str] = set()
        self._retired: deque[tuple[float, int]] = deque()  # (when, fd) forgotten, to close
        self._retiring = threading.Lock()
        #: where gateways sharing a database share blobs (``SharedBlobs``); None: files only
        self.shared: SharedBlobs | None = None

    def path(self, digest_hex: str) -> Path:
        if not valid_digest_hex(digest_hex):
            raise ValueError("blob name must be 64 lowercase hex digits")
        return self.root / digest_hex

    def exists(self, digest_hex: str) -> bool:
        return self.path(digest_hex).is_file()

    def size(self, digest_hex: str) -> int | None:
        try:
            return self.path(digest_hex).stat().st_size
        except FileNotFoundError:
            if self._fetch(digest_hex):
                return self.path(digest_hex).stat().st_size
            return None

    def fetch(self, digest_hex: str) -> bool:
        """``_fetch`` unless the file is here already (for the store's thread)."""
        return self.exists(digest_hex) or self._fetch(digest_hex)

    def _fetch(self, digest_hex: str) -> bool:
        """Copy a blob another gateway stored into the shared database into this directory,
        if it is there and hashes to its name. True when the file is now here."""
        if self.shared is None:
            return False
        now = time.monotonic()
        if now - self._unfetchable.get(digest_hex, now - RESTAT_SECONDS) < RESTAT_SECONDS:
            return False  # asked again within the second: not one query (and hash) per block
        data = self.shared.get(digest_hex)
        if data is None or hashlib.sha256(data).hexdigest() != digest_hex:
            if len(self._unfetchable) >= 1024:  # a cap: names come from requests
                self._unfetchable.clear()
            self._unfetchable[digest_hex] = now
            return False
        self._unfetchable.pop(digest_hex, None)
        self.write_bytes(digest_hex, data, share=False)
        return True

    def write_bytes(self, digest_hex: str, data: bytes, share: bool = True) -> None:
        """Store ``data`` (already known to hash to ``digest_hex``) atomically and durably."""
        temp, fd = self.new_temp(digest_hex)
        try:
            rest = memoryview(data)
            while rest:
                rest = rest[os.write(fd, rest):]
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        self.commit_temp(temp, fd, digest_hex, share=share)

    def new_temp(self, digest_hex: str) -> tuple[Path, int]:
        """Open a fresh temp file for an upload; returns (path, fd)."""
        self.path(digest_hex)  # validate the name first
        p = self.tmp / f"{digest_hex}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return p, fd

    def commit_temp(self, temp: Path, fd: int, digest_hex: str, share: bool = True) -> None:
        """fsync the temp file, rename it to its digest name and fsync the directory; with a
        shared database, store it there too (before the upload is answered)."""
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if share and self.shared is not None:
            self.shared.put(digest_hex, temp.read_bytes())
        os.rename(temp, self.path(digest_hex))
        fsync_dir(self.root)
        self.forget(digest_hex)

    def forget(self, digest_hex: str) -> None:
        """Stop serving from the open file. Its descriptor is closed a second later, not now:
        the event loop may be between ``opened`` and its ``pread`` while the store's thread
        forgets it (a re-upload, a removal), and a number closed now could name another
        file by then."""
        o = self._open.pop(digest_hex, None)
        now = time.monotonic()
        with self._retiring:  # both threads forget
            if o is not None:
                self._retired.append((now, o.fd))
            while self._retired and now - self._retired[0][0] >= RESTAT_SECONDS:
                os.close(self._retired.popleft()[1])

    def remove(self, digest_hex: str) -> bool:
        """Delete a blob no image refers to any more (durably); False if it was not there."""
        self.forget(digest_hex)
        try:
            self.path(digest_hex).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.root)
        self._corrupt.pop(digest_hex, None)
        self._reported.discard(digest_hex)
        return True

    def newly_bad(self, digest_hex: str) -> bool:
        """True the first time a missing or corrupt blob is asked about since it was last
        good: the problem is recorded once, not once per block request."""
        if digest_hex in self._reported:
            return False
        self._reported.add(digest_hex)
        return True

    def close(self) -> None:
        for name in list(self._open):
            self.forget(name)
        with self._retiring:
            while self._retired:
                os.close(self._retired.popleft()[1])

    def opened(self, digest_hex: str, fetch: bool = True) -> tuple[int, int]:
        """(fd, size) of a verified blob; verifies it when first opened or when it changed.

        Raises FileNotFoundError when absent and CorruptBlob when the content does not hash to
        its name (the caller answers 5.00 and records an event). ``fetch=False``: a blob not
        here is not copied from the shared store (a database read: the event loop asks the
        store's thread to ``fetch`` it instead)."""
        o = self._open.get(digest_hex)
        now = time.monotonic()
        if o is not None and now - o.checked < RESTAT_SECONDS:
            return o.fd, o.size
        p = self.path(digest_hex)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if not fetch or not self._fetch(digest_hex):
                raise
            st = os.stat(p)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if o is not None and o.stamp == stamp:
            o.checked = now
            return o.fd, o.size
        self.forget(digest_hex)
        if self._corrupt.get(digest_hex) == stamp:  # do not rehash a known-bad file per request
            raise CorruptBlob(f"blob {digest_hex[:16]}… does not hash to its name")
        fd = os.open(p, os.O_RDONLY)
        try:
            h = hashlib.sha256()
            offset = 0
            while True:
                chunk = os.pread(fd, CHUNK, offset)
                if not chunk:
                    break
                h.update(chunk)
                offset += len(chunk)
            if h.hexdigest() != digest_hex:
                self._corrupt[digest_hex] = stamp
                self._reported.discard(digest_hex)
                raise CorruptBlob(f"blob {digest_hex[:16]}… does not hash to its name")
        except BaseException:
            os.close(fd)
            raise
        self._open[digest_hex] = _Open(fd, offset, stamp, now)
        self._reported.discard(digest_hex)
        return fd, offset
