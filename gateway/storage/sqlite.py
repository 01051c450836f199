"""SQLite: the embedded default, one file in WAL mode.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. In WAL mode ``NORMAL`` only fsyncs
at checkpoints, so a power cut can lose the last committed transactions, yet the gateway has
already answered the device or the operator by then ("state is durable before it is
acknowledged", invariant 5). ``FULL`` fsyncs the WAL on every commit; the engine answers a
unit of work only after its transaction committed. ``isolation_level=None``: transactions are
exactly the ``BEGIN IMMEDIATE`` … ``COMMIT`` the caller issues, nothing commits behind its back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .schema import MIGRATIONS, SchemaTooNew, statements

DIALECT = "sqlite"


class SqliteBackend:
    dialect = DIALECT
    retryable: tuple[type[BaseException], ...] = ()  # busy_timeout waits for other writers

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return f"sqlite:///{self.path.resolve()}"

    def connect(self, read_only: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if read_only:
            db.execute("PRAGMA query_only=ON")  # a write in a read unit is an error
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    @staticmethod
    def begin(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock later

    @staticmethod
    def begin_read(db: sqlite3.Connection) -> None:
        db.execute("BEGIN")  # one snapshot for every statement of the unit

    @staticmethod
    def commit(db: sqlite3.Connection) -> None:
        db.execute("COMMIT")

    @staticmethod
    def rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

    def migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaTooNew(version)
        for n in range(version, len(MIGRATIONS)):
            self.begin(db)
            try:
                for stmt in statements(MIGRATIONS[n], DIALECT):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version={n + 1}")
                self.commit(db)
            except BaseException:
                self.rollback(db)
                raise
