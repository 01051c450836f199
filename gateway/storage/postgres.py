"""PostgreSQL: one database shared by several gateways (psycopg 3).

A connection is in autocommit mode and transactions are explicit (``BEGIN`` … ``COMMIT``, as on
SQLite): a read outside a transaction holds nothing. Several gateways write the same rows:
a unit that loses a deadlock or a serialization check is run again with its whole batch
(``retryable``). Migrations take an advisory lock so two gateways starting together migrate
once.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from .schema import MIGRATIONS, SchemaTooNew, statements

DIALECT = "postgresql"
MIGRATION_LOCK = 0x666F7461_0001  # pg_advisory_xact_lock key: "fota", 1


class PostgresBackend:
    dialect = DIALECT
    retryable: tuple[type[BaseException], ...] = (psycopg.errors.SerializationFailure,
                                                  psycopg.errors.DeadlockDetected)

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return self.url

    def connect(self, read_only: bool = False) -> psycopg.Connection[Any]:
        """``read_only``: its transactions are (``begin_read``) READ ONLY anyway."""
        return psycopg.connect(self.url, row_factory=dict_row, autocommit=True)

    @staticmethod
    def begin(db: psycopg.Connection[Any]) -> None:
        db.execute("BEGIN")

    @staticmethod
    def begin_read(db: psycopg.Connection[Any]) -> None:
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot

    @staticmethod
    def commit(db: psycopg.Connection[Any]) -> None:
        db.execute("COMMIT")

    @staticmethod
    def rollback(db: psycopg.Connection[Any]) -> None:
        if not db.closed and db.info.transaction_status != TransactionStatus.IDLE:
            db.execute("ROLLBACK")

    def migrate(self, db: psycopg.Connection[Any]) -> None:
        try:
            self.begin(db)
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS fota_schema (version BIGINT NOT NULL)")
            row = db.execute("SELECT version FROM fota_schema").fetchone()
            if row is None:
                db.execute("INSERT INTO fota_schema VALUES (0)")
            version = 0 if row is None else row["version"]
            if version > len(MIGRATIONS):
                raise SchemaTooNew(version)
            for n in range(version, len(MIGRATIONS)):
                for stmt in statements(MIGRATIONS[n], DIALECT):
                    db.execute(stmt)  # type: ignore[arg-type]  # our own DDL, no parameters
                db.execute("UPDATE fota_schema SET version=%s", (n + 1,))
            self.commit(db)
        except BaseException:
            self.rollback(db)
            raise
