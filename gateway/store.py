"""The gateway's durable state: one SQLite file in WAL mode.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. In WAL mode ``NORMAL`` only fsyncs
at checkpoints, so a power cut can lose the last committed transactions, yet the gateway has
already answered the device or the operator by then ("state is durable before it is
acknowledged", invariant 5). ``FULL`` fsyncs the WAL on every commit; every handler commits
before it builds its response.

Schema changes are appended to ``MIGRATIONS``; ``PRAGMA user_version`` counts how many ran.
All access happens on the event loop thread through one connection: transactions are short
(microseconds plus one fsync) and serialising them keeps job transitions race-free.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        class TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0,
        state INTEGER NOT NULL DEFAULT 0,
        result INTEGER NOT NULL DEFAULT 0,
        progress INTEGER NOT NULL DEFAULT 0,
        last_seen REAL,
        address TEXT,
        enrolled INTEGER NOT NULL DEFAULT 0,
        tags TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        class TEXT NOT NULL,
        vendor TEXT NOT NULL,
        uri TEXT NOT NULL,
        manifest BLOB NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE campaigns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        image TEXT NOT NULL REFERENCES images(id),
        state TEXT NOT NULL,
        created REAL NOT NULL,
        deadline REAL NOT NULL
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign INTEGER NOT NULL REFERENCES campaigns(id),
        device TEXT NOT NULL REFERENCES devices(id),
        state TEXT NOT NULL,
        result INTEGER,
        progress INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL,
        updated REAL NOT NULL,
        UNIQUE (campaign, device)
    );
    CREATE INDEX jobs_device ON jobs(device, state);
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        device TEXT,
        campaign INTEGER,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_time ON events(time);
    CREATE INDEX events_device ON events(device, id);
    """,
    # 2: rollout campaigns: policy (JSON, gateway/rollout.py), released phase, failures the
    # operator acknowledged by resuming, why it paused; a job's phase and its "not before" time
    # (a device that deferred itself)
    """
    ALTER TABLE campaigns ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE campaigns ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE campaigns ADD COLUMN acknowledged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE campaigns ADD COLUMN reason TEXT;
    ALTER TABLE jobs ADD COLUMN phase INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN not_before REAL;
    CREATE INDEX jobs_campaign ON jobs(campaign, phase, state);
    """,
    # 3: report authentication (gateway/devauth.py): a device's key and its highest counter
    """
    ALTER TABLE devices ADD COLUMN key BLOB;
    ALTER TABLE devices ADD COLUMN counter INTEGER NOT NULL DEFAULT 0;
    """,
]


class Store:
    def __init__(self, path: Path, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.on_event = on_event  # called for each event once its transaction is committed
        self._unlogged: list[dict[str, Any]] = []
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a transaction is exactly
        # what `transaction()` wraps and nothing is committed behind our back.
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema version {version} is newer than this gateway "
                f"({len(MIGRATIONS)}); refusing to touch it"
            )
        for n in range(version, len(MIGRATIONS)):
            with self.transaction():
                for stmt in MIGRATIONS[n].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version={n + 1}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit: committed (and fsynced) on exit, rolled back on error."""
        if self.db.in_transaction:  # nested: the outer one commits
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._unlogged.clear()
            raise
        done, self._unlogged = self._unlogged, []
        if self.on_event is not None:
            for ev in done:
                self.on_event(ev)

    # ---- events -------------------------------------------------------------------------
    def event(self, kind: str, detail: str, *, device: str | None = None,
              campaign: int | None = None) -> dict[str, Any]:
        t = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO events(time, device, campaign, kind, detail) VALUES (?,?,?,?,?)",
                (t, device, campaign, kind, detail))
            ev = {"id": cur.lastrowid, "time": t, "device": device, "campaign": campaign,
                  "kind": kind, "detail": detail}
            self._unlogged.append(ev)
        return ev

    def events_since(self, since: float, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM events WHERE time >= ? ORDER BY id LIMIT ?",
                               (since, limit)).fetchall()
        return [dict(r) for r in rows]

    def device_events(self, device: str, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM (SELECT * FROM events WHERE device=? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id", (device, limit)).fetchall()
        return [dict(r) for r in rows]

    # ---- devices ------------------------------------------------------------------------
    def device(self, device_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM devices WHERE id=?", (device_id,)).fetchone()

    def devices(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM devices ORDER BY id").fetchall()

    def devices_of_class(self, device_class: str) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM devices WHERE class=? ORDER BY id",
                               (device_class,)).fetchall()

    # ---- images -------------------------------------------------------------------------
    def image(self, image_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()

    def images(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM images ORDER BY created").fetchall()

    # ---- campaigns and jobs -------------------------------------------------------------
    def campaign(self, n: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM campaigns WHERE id=?", (n,)).fetchone()

    def campaigns(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM campaigns ORDER BY id").fetchall()

    def job(self, job_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()

    def jobs_of_campaign(self, n: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM jobs WHERE campaign=? ORDER BY id", (n,)).fetchall()

    def jobs_of_device(self, device_id: str) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM jobs WHERE device=? ORDER BY id",
                               (device_id,)).fetchall()

    def phase_counts(self, n: int) -> list[tuple[int, str, int]]:
        """(phase, job state, count) rows of campaign ``n``."""
        return [tuple(r) for r in self.db.execute(
            "SELECT phase, state, COUNT(*) FROM jobs WHERE campaign=? GROUP BY phase, state",
            (n,)).fetchall()]

    def count_jobs(self, states: tuple[str, ...], campaign: int | None = None) -> int:
        marks = ",".join("?" * len(states))
        if campaign is None:
            return self.db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})",
                                   states).fetchone()[0]
        return self.db.execute(
            f"SELECT COUNT(*) FROM jobs WHERE campaign=? AND state IN ({marks})",
            (campaign, *states)).fetchone()[0]

    def job_counts(self, n: int) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM jobs WHERE campaign=? GROUP BY state",
                               (n,)).fetchall()
        return {r[0]: r[1] for r in rows}


def tags_json(tags: list[str]) -> str:
    return json.dumps(tags)
