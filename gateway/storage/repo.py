"""Every SQL statement of the gateway, for both engines: ``Repo`` over one connection.

A ``Repo`` method runs inside the caller's transaction (the engine's unit of work, or
``gateway.store.Store.transaction``); it never commits. SQL is written once with ``?``
placeholders (SQLite's); on PostgreSQL they become ``%s``. Rows come back as dicts.
Events a unit writes wait in ``pending_events`` until its transaction commits, so nothing is
announced that a rollback takes back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

Row = dict[str, Any]


class Repo:
    def __init__(self, conn: Any, dialect: str, clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.dialect = dialect  # "sqlite" | "postgresql"
        self.clock = clock
        self.pending_events: list[Row] = []
        self._sql: dict[str, str] = {}

    # ---- plumbing -----------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        got = self._sql.get(sql)
        if got is None:
            got = self._sql[sql] = sql.replace("?", "%s") if self.dialect == "postgresql" else sql
        return got

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._q(sql), tuple(args))

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cur = self.conn.cursor()
        cur.executemany(self._q(sql), [tuple(r) for r in rows])

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [dict(r) for r in self._exec(sql, args).fetchall()]

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        r = self._exec(sql, args).fetchone()
        return None if r is None else dict(r)

    def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        r = self._exec(sql, args).fetchone()
        return None if r is None else next(iter(dict(r).values()))

    # ---- events -------------------------------------------------------------------------
    def event(self, kind: str, detail: str, *, device: str | None = None,
              campaign: int | None = None) -> Row:
        t = self.clock()
        n = self._scalar("INSERT INTO events(time, device, campaign, kind, detail) "
                         "VALUES (?,?,?,?,?) RETURNING id", (t, device, campaign, kind, detail))
        ev = {"id": n, "time": t, "device": device, "campaign": campaign, "kind": kind,
              "detail": detail}
        self.pending_events.append(ev)
        return ev

    def events_since(self, since: float, limit: int) -> list[Row]:
        return self._all("SELECT * FROM events WHERE time >= ? ORDER BY id LIMIT ?",
                         (since, limit))

    def device_events(self, device: str, limit: int) -> list[Row]:
        return self._all("SELECT * FROM (SELECT * FROM events WHERE device=? ORDER BY id DESC "
                         "LIMIT ?) AS last ORDER BY id", (device, limit))

    # ---- devices ------------------------------------------------------------------------
    def device(self, device_id: str) -> Row | None:
        return self._one("SELECT * FROM devices WHERE id=?", (device_id,))

    def devices(self) -> list[Row]:
        return self._all("SELECT * FROM devices ORDER BY id")

    def devices_of_class(self, device_class: str) -> list[Row]:
        return self._all("SELECT * FROM devices WHERE class=? ORDER BY id", (device_class,))

    def add_reported_device(self, device_id: str, cls: str, seq: int, state: int, result: int,
                            progress: int, address: str, now: float) -> None:
        """A device's first report registers it (not enrolled)."""
        self._exec("INSERT INTO devices(id, class, seq, state, result, progress, last_seen, "
                   "address) VALUES (?,?,?,?,?,?,?,?)",
                   (device_id, cls, seq, state, result, progress, now, address))

    def update_reported_device(self, device_id: str, cls: str, seq: int, state: int, result: int,
                               progress: int, address: str, now: float) -> None:
        """What a report says about its device, and when and where it was heard."""
        self._exec("UPDATE devices SET class=?, seq=?, state=?, result=?, progress=?, "
                   "last_seen=?, address=? WHERE id=?",
                   (cls, seq, state, result, progress, now, address, device_id))

    # ---- report keys (gateway/devauth.py) -----------------------------------------------
    def device_key(self, device_id: str) -> Row | None:
        """{"key": bytes | None, "counter": int} of a device, None when unknown."""
        row = self._one("SELECT key, counter FROM devices WHERE id=?", (device_id,))
        if row is not None and row["key"] is not None:
            row["key"] = bytes(row["key"])
        return row

    def set_device_key(self, device_id: str, key: bytes) -> None:
        """A new key starts its counter over."""
        self._exec("UPDATE devices SET key=?, counter=0 WHERE id=?", (key, device_id))

    def raise_counter(self, device_id: str, counter: int) -> None:
        """The highest report counter seen only goes up."""
        self._exec("UPDATE devices SET counter=? WHERE id=? AND counter<?",
                   (counter, device_id, counter))

    # ---- images -------------------------------------------------------------------------
    def image(self, image_id: str) -> Row | None:
        return self._one("SELECT * FROM images WHERE id=?", (image_id,))

    def images(self) -> list[Row]:
        return self._all("SELECT * FROM images ORDER BY created")

    # ---- wrapped content keys of encrypted images (gateway/wrapped.py) -------------------
    def put_wrapped_keys(self, image_id: str, keys: dict[str, bytes]) -> None:
        """Insert or replace each recipient's wrapped key (a re-wrap replaces the old one)."""
        self._many("DELETE FROM wrapped_keys WHERE image=? AND recipient=?",
                   [(image_id, r) for r in keys])
        self._many("INSERT INTO wrapped_keys(image, recipient, wrapped) VALUES (?,?,?)",
                   [(image_id, r, w) for r, w in keys.items()])

    def count_wrapped_keys(self, image_id: str) -> int:
        return self._scalar("SELECT COUNT(*) FROM wrapped_keys WHERE image=?", (image_id,))

    def wrapped_key(self, image_id: str, device_id: str, class_recipient: str) -> bytes | None:
        """The device's own wrapped key, else the class recipient's, else None."""
        w = self._scalar("SELECT wrapped FROM wrapped_keys WHERE image=? AND recipient IN (?,?) "
                         "ORDER BY CASE WHEN recipient=? THEN 1 ELSE 0 END LIMIT 1",
                         (image_id, device_id, class_recipient, class_recipient))
        return None if w is None else bytes(w)

    # ---- campaigns and jobs -------------------------------------------------------------
    def campaign(self, n: int) -> Row | None:
        return self._one("SELECT * FROM campaigns WHERE id=?", (n,))

    def campaigns(self) -> list[Row]:
        return self._all("SELECT * FROM campaigns ORDER BY id")

    def job(self, job_id: int) -> Row | None:
        return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def jobs_of_campaign(self, n: int) -> list[Row]:
        return self._all("SELECT * FROM jobs WHERE campaign=? ORDER BY id", (n,))

    def jobs_of_device(self, device_id: str) -> list[Row]:
        return self._all("SELECT * FROM jobs WHERE device=? ORDER BY id", (device_id,))

    def phase_counts(self, n: int) -> list[tuple[int, str, int]]:
        """(phase, job state, count) rows of campaign ``n``."""
        return [(r["phase"], r["state"], r["n"]) for r in self._all(
            "SELECT phase, state, COUNT(*) AS n FROM jobs WHERE campaign=? GROUP BY phase, state",
            (n,))]

    def count_jobs(self, states: tuple[str, ...], campaign: int | None = None) -> int:
        marks = ",".join("?" * len(states))
        if campaign is None:
            return self._scalar(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", states)
        return self._scalar(f"SELECT COUNT(*) FROM jobs WHERE campaign=? AND state IN ({marks})",
                            (campaign, *states))

    def job_counts(self, n: int) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE campaign=? GROUP BY state", (n,))}


    # ---- whole tables (``fota-gateway migrate``) -----------------------------------------
    def table_rows(self, table: str, batch: int = 2000) -> Iterator[list[Row]]:
        """Every row of ``table`` (one of ``TABLES``) in primary key order, ``batch`` at a
        time."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        cur = self._exec(f"SELECT * FROM {table} ORDER BY id")
        while rows := cur.fetchmany(batch):
            yield [dict(r) for r in rows]

    def insert_rows(self, table: str, rows: list[Row]) -> None:
        """Insert rows as they are (ids included)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        if rows:
            cols = list(rows[0])
            self._many(f"INSERT INTO {table}({', '.join(cols)}) VALUES "
                       f"({', '.join('?' * len(cols))})", [[r[c] for c in cols] for r in rows])

    def count_rows(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self._scalar(f"SELECT COUNT(*) FROM {table}")

    def restart_ids(self, table: str) -> None:
        """After rows came in with their ids: new rows get ids above them."""
        if table not in SERIAL_TABLES:
            return
        if self.dialect == "postgresql":
            self._exec(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
        # SQLite's AUTOINCREMENT keeps sqlite_sequence up to date on every insert


#: Every table, parents before children (foreign keys).
TABLES = ("devices", "images", "campaigns", "jobs", "events")
#: Tables whose ids the database hands out.
SERIAL_TABLES = ("campaigns", "jobs", "events")


def tags_json(tags: list[str]) -> str:
    return json.dumps(tags)
