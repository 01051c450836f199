"""The schema: one list of migrations, written for SQLite, translated for PostgreSQL.

A migration is appended, never edited (a deployed database has run the old text). Each engine
counts how many ran (SQLite: ``PRAGMA user_version``; PostgreSQL: table ``fota_schema``) and
refuses a database from a newer gateway.
"""

from __future__ import annotations

import re

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
    # 4: an image whose blob was found missing or corrupt (why; NULL when good), a human
    # version label and release notes
    """
    ALTER TABLE images ADD COLUMN problem TEXT;
    ALTER TABLE images ADD COLUMN label TEXT;
    ALTER TABLE images ADD COLUMN notes TEXT;
    """,
    # 5: encrypted images (gateway/wrapped.py): each recipient's wrapped content key; the
    # recipient is a device id, or "*" for a class key every device of the image's class holds
    """
    CREATE TABLE wrapped_keys (
        image TEXT NOT NULL REFERENCES images(id),
        recipient TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        PRIMARY KEY (image, recipient)
    );
    """,
    # 6: firmware blobs in the database, for gateways that share it (PostgreSQL): each keeps
    # a local copy under --data, re-verified by digest (gateway/blobs.py); SQLite leaves it empty
    """
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    """,
    # 7: compression and deltas (gateway/deltas.py): what a device can decode (report CAPS) and
    # the base its delta failed on; variants of an image (id: "<image>.<base digest or full>",
    # uri: the id under f/ of the blob sent, which variants may share; its signed manifest:
    # NULL while a built delta waits for cc to sign it); the variant a job was offered
    """
    ALTER TABLE devices ADD COLUMN caps INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN no_delta TEXT;
    CREATE TABLE variants (
        id TEXT PRIMARY KEY,
        uri TEXT NOT NULL,
        image TEXT NOT NULL REFERENCES images(id),
        base TEXT NOT NULL,
        compression INTEGER NOT NULL,
        sent TEXT NOT NULL,
        sent_size INTEGER NOT NULL,
        manifest BLOB,
        created REAL NOT NULL,
        UNIQUE (image, base, compression)
    );
    CREATE INDEX variants_uri ON variants(uri);
    ALTER TABLE jobs ADD COLUMN variant TEXT;
    ALTER TABLE jobs ADD COLUMN sent_size INTEGER;
    """,
    # 8: a device's events found by a table filed in bulk (Repo.file_events, by the sweeper)
    # instead of an index on events written with each event: a batch of reports from 256
    # devices put one entry in each of 256 places of that index, a page each (SQLite wrote
    # ~1 MB of WAL a commit). Events above events_filed.upto are not filed yet: a device's
    # newest events are read from both (Repo.device_events_page).
    """
    CREATE TABLE events_by_device (
        device TEXT NOT NULL,
        event INTEGER NOT NULL,
        PRIMARY KEY (device, event)
    ) WITHOUT ROWID;
    CREATE TABLE events_filed (upto INTEGER NOT NULL);
    INSERT INTO events_by_device(device, event) SELECT device, id FROM events
        WHERE device IS NOT NULL;
    INSERT INTO events_filed(upto) SELECT COALESCE(MAX(id), 0) FROM events;
    DROP INDEX events_device;
    """,
]

# SQLite's types are affinities; PostgreSQL needs 64-bit integers (seq, counters), 8-byte
# floats (times) and bytea.
_PG_TYPES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT ROWID"), ")"),  # SQLite: a table that is its primary key
]


def statements(migration: str, dialect: str) -> list[str]:
    """The statements of one migration in ``dialect`` ("sqlite" or "postgresql")."""
    out = []
    for stmt in migration.split(";"):
        if not stmt.strip():
            continue
        if dialect == "postgresql":
            for pattern, replacement in _PG_TYPES:
                stmt = pattern.sub(replacement, stmt)
        out.append(stmt.strip())
    return out


class SchemaTooNew(RuntimeError):
    def __init__(self, version: int) -> None:
        super().__init__(f"database schema version {version} is newer than this gateway "
                         f"({len(MIGRATIONS)}); refusing to touch it")
