"""The gateway's store as ``Fleet`` uses it today: synchronously, on the event loop.

The SQL is ``storage.repo.Repo``'s, the connection, pragmas and migrations the engine
backend's (``storage.sqlite``: a file, the default; ``storage.postgres``: a database several
gateways share). This class adds the nestable ``transaction()`` the fleet's methods wrap their
work in: one atomic, durable unit, committed before the caller answers. ``storage.Engine``
runs the same ``Repo`` off the loop with group commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .storage import backend_for
from .storage.repo import Repo, Row, tags_json
from .storage.schema import MIGRATIONS
from .storage.sqlite import SqliteBackend

__all__ = ["MIGRATIONS", "Store", "tags_json"]


class Store(Repo):
    def __init__(self, where: Path | str, on_event: Callable[[Row], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``where``: a SQLite file path, or a store URL (``sqlite:///…``, ``postgresql://…``)."""
        self.backend = (backend_for(where) if isinstance(where, str) and "://" in where
                        else SqliteBackend(Path(where)))
        db = self.backend.connect()
        try:
            self.backend.migrate(db)
        except BaseException:
            db.close()
            raise
        super().__init__(db, self.backend.dialect, clock)
        self.db = db
        self.on_event = on_event  # called for each event once its transaction is committed
        self._depth = 0
        self._sweeper = False

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One atomic, durable unit: committed (and fsynced) on exit, rolled back on error."""
        if self._depth:  # nested: the outer one commits
            yield self.db
            return
        self.backend.begin(self.db)
        self._depth = 1
        try:
            yield self.db
            self.backend.commit(self.db)
        except BaseException:
            self.backend.rollback(self.db)
            self.pending_events.clear()
            raise
        finally:
            self._depth = 0
        done, self.pending_events = self.pending_events, []
        if self.on_event is not None:
            for ev in done:
                self.on_event(ev)

    def event(self, kind: str, detail: str, *, device: str | None = None,
              campaign: int | None = None) -> dict[str, Any]:
        with self.transaction():
            return super().event(kind, detail, device=device, campaign=campaign)

    def take_sweeper(self) -> bool:
        if self._sweeper:
            return True
        self._sweeper = super().take_sweeper()
        return self._sweeper


class StoreBlobs:
    """``BlobStore.shared`` in the store's ``blobs`` table: gateways that share a database
    share their firmware (each keeps a verified copy under its --data)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, digest_hex: str) -> bytes | None:
        return self.store.blob(digest_hex)

    def put(self, digest_hex: str, data: bytes) -> None:
        with self.store.transaction():
            self.store.put_blob(digest_hex, data)
