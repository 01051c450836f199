"""The gateway's SQLite store as ``Fleet`` uses it today: synchronously, on the event loop.

The SQL is ``storage.repo.Repo``'s, the pragmas and migrations ``storage.sqlite``'s; this class
adds the nestable ``transaction()`` that the fleet's methods wrap their work in. Transactions
are short (microseconds plus one fsync) and serialising them on the loop keeps job transitions
race-free. ``storage.Engine`` runs the same ``Repo`` off the loop with group commit, on SQLite
or PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import metrics
from .storage.repo import Repo, Row, tags_json
from .storage.schema import MIGRATIONS
from .storage.sqlite import DIALECT, SqliteBackend

__all__ = ["MIGRATIONS", "Store", "tags_json"]


class Store(Repo):
    def __init__(self, path: Path, on_event: Callable[[Row], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        backend = SqliteBackend(path)
        db = backend.connect()
        try:
            backend.migrate(db)
        except BaseException:
            db.close()
            raise
        super().__init__(db, DIALECT, clock)
        self.db = db
        self.on_event = on_event  # called for each event once its transaction is committed

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit: committed (and fsynced) on exit, rolled back on error."""
        if self.db.in_transaction:  # nested: the outer one commits
            yield self.db
            return
        t0 = time.perf_counter()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
            metrics.STORE_SECONDS.observe(time.perf_counter() - t0)
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.pending_events.clear()
            raise
        done, self.pending_events = self.pending_events, []
        if self.on_event is not None:
            for ev in done:
                self.on_event(ev)

    def event(self, kind: str, detail: str, *, device: str | None = None,
              campaign: int | None = None) -> dict[str, Any]:
        with self.transaction():
            return super().event(kind, detail, device=device, campaign=campaign)
