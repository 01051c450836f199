"""Block1 reception (RFC 7959) handled by the gateway itself.

aiocoap would reassemble a Block1 body by repeated ``bytes +=`` with no size limit. Here each
transfer streams into a sink with a hard limit: a temp file for image uploads (hashed as it
arrives), a small buffer for control bodies. Blocks must arrive in order; a gap or a block of
an unknown transfer answers 4.08 Request Entity Incomplete, so the client restarts at 0. The
block just accepted may come again (its 2.31 was lost and the client re-sent it with a new
message id, past aiocoap's deduplication): it is acknowledged again and not written twice.

Partial transfers are capped per source host and in total, and each expires when idle: 4,085
abandoned uploads once held as many file descriptors until the gateway could open no more.
Over a cap, the new transfer is refused (``Busy``: 5.03 with Max-Age); the ones in progress
keep going.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blobs import BlobStore

IDLE_SECONDS = 120.0  # an upload silent for this long is dropped (temp file removed)
MAX_TRANSFERS = 16  # partial uploads at once, in total
MAX_PER_SOURCE = 4  # partial uploads at once from one source host


class TooLarge(Exception):
    pass


class Incomplete(Exception):
    pass


class Busy(Exception):
    """Too many partial uploads (in total or from this source): come back later."""


class MemorySink:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        if len(self.buf) + len(data) > self.limit:
            raise TooLarge()
        self.buf += data

    def discard(self) -> None:
        self.buf = bytearray()


class FileSink:
    """Streams an image into a temp file under blobs/tmp, hashing as it goes."""

    def __init__(self, blobs: BlobStore, digest_hex: str, limit: int) -> None:
        self.blobs = blobs
        self.digest_hex = digest_hex
        self.limit = limit
        self.size = 0
        self.hash = hashlib.sha256()
        self.path: Path | None = None
        self.fd: int | None = None
        self.path, self.fd = blobs.new_temp(digest_hex)

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise TooLarge()
        assert self.fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)
        self.hash.update(data)

    def commit(self) -> None:
        """Move the complete, verified file into place (atomic, durable)."""
        assert self.fd is not None and self.path is not None
        fd, path = self.fd, self.path
        self.fd = self.path = None
        try:
            self.blobs.commit_temp(path, fd, self.digest_hex)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


@dataclass
class Transfer:
    sink: Any
    source: str
    touched: float
    received: int = 0
    last: int = -1  # offset of the last block written


class Block1Receiver:
    """Transfers keyed by (client address, method, path); ``source`` is the client's host."""

    def __init__(self, max_transfers: int = MAX_TRANSFERS, per_source: int = MAX_PER_SOURCE,
                 idle: float = IDLE_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_transfers, self.per_source, self.idle = max_transfers, per_source, idle
        self.clock = clock
        self.transfers: dict[tuple[Any, ...], Transfer] = {}

    def feed(self, key: tuple[Any, ...], block1: Any, payload: bytes, new_sink: Any,
             source: str = "") -> Any | None:
        """Feed one block. Returns the finished sink after the last block, else None.

        Raises TooLarge or Incomplete (the transfer is dropped in both cases), Busy (a new
        transfer over a cap)."""
        if block1 is None:  # the whole body in one message
            sink = new_sink()
            try:
                sink.write(payload)
            except BaseException:
                sink.discard()
                raise
            return sink
        num, more, szx = block1.block_number, block1.more, block1.size_exponent
        offset = num * (1 << (szx + 4))
        now = self.clock()
        if num == 0:
            self.drop(key)
            if more:
                self.expire(now)
                if (len(self.transfers) >= self.max_transfers
                        or sum(t.source == source for t in self.transfers.values())
                        >= self.per_source):
                    raise Busy()
            self.transfers[key] = Transfer(new_sink(), source, now)
        t = self.transfers.get(key)
        if t is not None and more and num > 0 and offset == t.last and offset + len(payload) == t.received:
            t.touched = now
            return None  # a repeat of the block just written: acknowledge it again
        if t is None or offset != t.received or (more and len(payload) != 1 << (szx + 4)):
            self.drop(key)
            raise Incomplete()
        try:
            t.sink.write(payload)
        except BaseException:
            self.drop(key)
            raise
        t.last = offset
        t.received += len(payload)
        t.touched = now
        if more:
            return None
        del self.transfers[key]
        return t.sink

    def drop(self, key: tuple[Any, ...]) -> None:
        t = self.transfers.pop(key, None)
        if t is not None:
            t.sink.discard()

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for key, t in list(self.transfers.items()):
            if now - t.touched > self.idle:
                self.drop(key)

    def close(self) -> None:
        for key in list(self.transfers):
            self.drop(key)
