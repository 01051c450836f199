"""Every SQL statement of the gateway, for both engines: ``Repo`` over one connection.

A ``Repo`` method runs inside the caller's transaction (``gateway.store.Store.transaction``,
or a ``fota-gateway migrate`` copy); it never commits. SQL is written once with ``?``
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
FILE_MOST = 100_000  # events filed by device in one transaction at most (file_events)


class Repo:
    def __init__(self, conn: Any, dialect: str, clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.dialect = dialect  # "sqlite" | "postgresql"
        self.clock = clock
        self.pending_events: list[Row] = []
        self._sql: dict[str, str] = {}
        self._dict: Callable[[Any], Row] = dict if dialect == "postgresql" else _row_dict

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

    def _copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """PostgreSQL: ``rows`` into a table by ``COPY … FROM STDIN`` (``sql``)."""
        with self.conn.cursor().copy(sql) as copy:
            for r in rows:
                copy.write_row(r)

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(map(self._dict, self._exec(sql, args).fetchall()))

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        r = self._exec(sql, args).fetchone()
        return None if r is None else self._dict(r)

    def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        r = self._exec(sql, args).fetchone()
        return None if r is None else next(iter(self._dict(r).values()))

    # ---- events -------------------------------------------------------------------------
    def event(self, kind: str, detail: str, *, device: str | None = None,
              campaign: int | None = None) -> Row:
        now = self.clock()
        ev = {"id": None, "time": now, "device": device, "campaign": campaign, "kind": kind,
              "detail": detail}
        self.pending_events.append(ev)
        self._insert_event(ev, (now, device, campaign, kind, detail))
        return ev

    def _insert_event(self, ev: Row, args: tuple[Any, ...]) -> None:
        """Insert it (``args``: ``EVENT_INSERT``'s), and fill in the id the database gave it
        (``Store`` may defer both)."""
        cur = self._exec(EVENT_SQL, args)
        ev["id"] = next(iter(self._dict(cur.fetchone()).values()))

    def events_since(self, since: float, limit: int) -> list[Row]:
        return self._all("SELECT * FROM events WHERE time >= ? ORDER BY id LIMIT ?",
                         (since, limit))

    def device_events(self, device: str, limit: int) -> list[Row]:
        """The newest ``limit`` events of ``device``, oldest first."""
        return self.device_events_page(device, None, limit)[::-1]

    def device_events_page(self, device: str, before_id: int | None, limit: int) -> list[Row]:
        """The newest ``limit`` events of ``device`` (with an id below ``before_id``), newest
        first: those filed (``file_events``) through ``events_by_device``, the others from the
        events not filed yet (the newest; a scan of the ids above ``events_filed.upto``)."""
        before = MAX_ID if before_id is None else before_id
        return self._all(
            "SELECT * FROM events WHERE id IN (SELECT event FROM events_by_device WHERE "
            "device=? AND event<? ORDER BY event DESC LIMIT ?) UNION ALL SELECT * FROM events "
            "WHERE id > (SELECT upto FROM events_filed) AND id<? AND device=? "
            "ORDER BY id DESC LIMIT ?", (device, before, limit, before, device, limit))

    def file_events(self, most: int = FILE_MOST) -> int:
        """File up to ``most`` events (by id) into ``events_by_device``, in its key order (each
        device's new entries side by side: a few pages, not a page an event); returns how
        many ids were passed (0: all filed). Inside the caller's transaction."""
        upto = self._scalar(FILED_SQL)
        top = self._scalar("SELECT MAX(id) FROM events")
        if top is None or top <= upto:
            return 0
        new = min(top, upto + most)
        self._exec(FILE_SQL, (upto, new))
        self._exec(FILED_UPTO_SQL, (new,))
        return new - upto

    # ---- devices ------------------------------------------------------------------------
    def device(self, device_id: str) -> Row | None:
        return self._one("SELECT * FROM devices WHERE id=?", (device_id,))

    def devices(self) -> list[Row]:
        return self._all("SELECT * FROM devices ORDER BY id")

    def devices_by_ids(self, ids: list[str]) -> dict[str, Row]:
        """id -> row of those of ``ids`` that exist (a statement per 500 ids)."""
        out: dict[str, Row] = {}
        for k in range(0, len(ids), 500):
            chunk = ids[k:k + 500]
            out.update((r["id"], r) for r in self._all(
                f"SELECT * FROM devices WHERE id IN ({_qs(tuple(chunk))})", chunk))
        return out

    def devices_of_class(self, device_class: str) -> list[Row]:
        return self._all("SELECT * FROM devices WHERE class=? ORDER BY id", (device_class,))

    def add_reported_device(self, device_id: str, cls: str, seq: int, state: int, result: int,
                            progress: int, address: str, now: float, caps: int) -> None:
        """A device's first report registers it (not enrolled)."""
        self._exec(ADD_REPORTED_SQL,
                   (device_id, cls, seq, state, result, progress, now, address, caps))

    def report_device(self, device_id: str, cls: str, seq: int, state: int, result: int,
                      progress: int, address: str, now: float, caps: int,
                      active: tuple[str, ...]) -> Row | None:
        """Write what a report says about its device, and when and where it was heard; return
        the row as it was before (``REPORT_COLUMNS``: what a report reads of it), with
        ``active_job``: the id of its newest job in one of the ``active`` states (None: none).
        None: an unknown device (nothing written). On PostgreSQL one statement (one round
        trip per report in a batch); SQLite's RETURNING cannot name the row as it was, so there
        a SELECT comes first (no round trip)."""
        newest = _active_job_sql(active)
        new = (cls, seq, state, result, progress, now, address, caps)
        if self.dialect == "postgresql":
            return self._one("UPDATE devices AS d SET class=?, seq=?, state=?, result=?, "
                             "progress=?, last_seen=?, address=?, caps=? FROM (SELECT * FROM "
                             "devices WHERE id=? FOR UPDATE) AS old WHERE d.id = old.id "
                             f"RETURNING {REPORT_COLUMNS}, {newest}",
                             (*new, device_id, *active))
        old = self._one(f"SELECT {REPORT_COLUMNS}, {newest} FROM devices AS old WHERE old.id=?",
                        (*active, device_id))
        if old is not None:
            self.update_reported_device(device_id, *new)
        return old

    def update_reported_device(self, device_id: str, cls: str, seq: int, state: int,
                               result: int, progress: int, now: float, address: str,
                               caps: int) -> None:
        self._exec(REPORTED_SQL, (cls, seq, state, result, progress, now, address, caps,
                                  device_id))

    def devices_for_reports(self, ids: list[str], active: tuple[str, ...]) -> dict[str, Row]:
        """The rows of devices ``ids`` as ``report_device`` returns them, locked until the
        transaction ends: one statement for a batch of reports."""
        cur = self._exec(f"SELECT {REPORT_COLUMNS}, {_active_job_sql(active)} FROM devices "
                         f"AS old WHERE old.id IN ({_qs(tuple(ids))}) ORDER BY old.id"
                         + self._for_update, (*active, *ids))
        if self.dialect == "postgresql":  # dict rows
            return {r["id"]: r for r in cur.fetchall()}
        names = REPORT_NAMES  # sqlite3.Row by position (see _row_dict)
        return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}

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
        self._exec(RAISE_COUNTER_SQL, (counter, device_id, counter))

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
        marks = _qs(states)
        if campaign is None:
            return self._scalar(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", states)
        return self._scalar(f"SELECT COUNT(*) FROM jobs WHERE campaign=? AND state IN ({marks})",
                            (campaign, *states))

    def job_counts(self, n: int) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE campaign=? GROUP BY state", (n,))}


    # ---- fleet: devices ------------------------------------------------------------------
    def add_enrolled_device(self, device_id: str, cls: str, tags: str) -> None:
        self._exec("INSERT INTO devices(id, class, enrolled, tags) VALUES (?,?,1,?)",
                   (device_id, cls, tags))

    def enrol_device(self, device_id: str, cls: str, tags: str) -> None:
        self._exec("UPDATE devices SET class=?, enrolled=1, tags=? WHERE id=?",
                   (cls, tags, device_id))

    def set_device_tags(self, device_id: str, tags: str) -> None:
        self._exec("UPDATE devices SET tags=? WHERE id=?", (tags, device_id))

    def delete_device(self, device_id: str) -> None:
        self._exec("DELETE FROM devices WHERE id=?", (device_id,))

    def count_self_registered(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM devices WHERE enrolled=0")

    def unclaimed_devices(self, silent_since: float, limit: int) -> list[str]:
        """Self-registered devices nobody claimed (never enrolled, no key, no tags, no job)
        and not heard from since ``silent_since``."""
        return [r["id"] for r in self._all(
            "SELECT id FROM devices WHERE enrolled=0 AND key IS NULL AND tags='[]' "
            "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.device=devices.id) "
            "AND COALESCE(last_seen, 0) < ? LIMIT ?", (silent_since, limit))]

    def _device_filter(self, f: dict[str, Any]) -> tuple[str, list[Any]]:
        """WHERE clause of a device listing: state (int), class, tag, campaign (keys of ``f``)."""
        where, args = [], []
        if "state" in f:
            where.append("state=?")
            args.append(f["state"])
        if "class" in f:
            where.append("class=?")
            args.append(f["class"])
        if "tag" in f:  # tags is a JSON list of text: the tag in quotes is one whole element
            where.append("tags LIKE ? ESCAPE '!'")
            tag = json.dumps(f["tag"])
            args.append("%" + tag.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        if "campaign" in f:
            where.append("EXISTS (SELECT 1 FROM jobs WHERE jobs.device=devices.id "
                         "AND jobs.campaign=?)")
            args.append(f["campaign"])
        return (" WHERE " + " AND ".join(where)) if where else "", args

    def devices_page(self, f: dict[str, Any], offset: int, limit: int) -> list[Row]:
        where, args = self._device_filter(f)
        return self._all(f"SELECT * FROM devices{where} ORDER BY id LIMIT ? OFFSET ?",
                         (*args, limit, offset))

    def device_summary(self, f: dict[str, Any]) -> dict[str, Any]:
        """How many devices match, by state and by class (indexes, not rows)."""
        where, args = self._device_filter(f)
        by_state = {r["state"]: r["n"] for r in self._all(
            f"SELECT state, COUNT(*) AS n FROM devices{where} GROUP BY state", args)}
        by_class = {r["class"]: r["n"] for r in self._all(
            f"SELECT class, COUNT(*) AS n FROM devices{where} GROUP BY class", args)}
        return {"total": sum(by_state.values()), "by_state": by_state, "by_class": by_class}

    def campaign_jobs(self, n: int, limit: int, last: str) -> list[Row]:
        """Up to ``limit`` jobs of campaign ``n``: those not in state ``last`` first."""
        return self._all("SELECT * FROM jobs WHERE campaign=? ORDER BY "
                         "CASE WHEN state=? THEN 1 ELSE 0 END, id LIMIT ?", (n, last, limit))

    def held_devices(self, active: tuple[str, ...], paused: str) -> list[Row]:
        """(device, campaign, reason) of active jobs in paused campaigns."""
        return self._all(
            f"SELECT jobs.device AS device, campaigns.id AS campaign, campaigns.reason AS reason "
            f"FROM jobs JOIN campaigns ON campaigns.id = jobs.campaign WHERE campaigns.state=? "
            f"AND jobs.state IN ({_qs(active)})", (paused, *active))

    # ---- shared blobs (several gateways on one database) -----------------------------------
    def put_blob(self, digest: str, data: bytes) -> None:
        """Keep a blob in the database (a second put of the same digest changes nothing)."""
        self._exec("INSERT INTO blobs(digest, size, data) VALUES (?,?,?) "
                   "ON CONFLICT (digest) DO NOTHING", (digest, len(data), data))

    def blob(self, digest: str) -> bytes | None:
        got = self._scalar("SELECT data FROM blobs WHERE digest=?", (digest,))
        return None if got is None else bytes(got)

    # ---- fleet: images --------------------------------------------------------------------
    def add_image(self, image_id: str, digest: str, size: int, seq: int, cls: str, vendor: str,
                  uri: str, manifest: bytes, now: float, label: str | None = None,
                  notes: str | None = None) -> None:
        self._exec("INSERT INTO images(id, digest, size, seq, class, vendor, uri, manifest, "
                   "created, label, notes) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (image_id, digest, size, seq, cls, vendor, uri, manifest, now, label, notes))

    def resign_image(self, image_id: str, manifest: bytes, seq: int, label: str | None,
                     notes: str | None) -> None:
        """A new manifest (higher seq) for the same bytes; label and notes kept unless given."""
        self._exec("UPDATE images SET manifest=?, seq=?, label=COALESCE(?, label), "
                   "notes=COALESCE(?, notes) WHERE id=?", (manifest, seq, label, notes, image_id))

    def remove_device(self, device_id: str) -> int:
        """The device, its wrapped keys and its jobs; returns how many jobs went."""
        n = self._exec("DELETE FROM jobs WHERE device=?", (device_id,)).rowcount
        self._exec("DELETE FROM wrapped_keys WHERE recipient=?", (device_id,))
        self._exec("DELETE FROM devices WHERE id=?", (device_id,))
        return n

    def remove_image(self, image_id: str, campaigns: list[int]) -> None:
        """The image, its wrapped keys, and ``campaigns`` (its finished ones) with their jobs."""
        if campaigns:
            marks = _qs(tuple(campaigns))
            self._exec(f"DELETE FROM jobs WHERE campaign IN ({marks})", campaigns)
            self._exec(f"DELETE FROM campaigns WHERE id IN ({marks})", campaigns)
        self._exec("DELETE FROM wrapped_keys WHERE image=?", (image_id,))
        self._exec("DELETE FROM images WHERE id=?", (image_id,))

    def count_images_with_digest(self, digest: str) -> int:
        return self._scalar("SELECT COUNT(*) FROM images WHERE digest=?", (digest,))

    def images_with_digest(self, digest: str) -> list[Row]:
        return self._all("SELECT * FROM images WHERE digest=?", (digest,))

    def set_image_problem(self, image_id: str, problem: str | None) -> None:
        self._exec("UPDATE images SET problem=? WHERE id=?", (problem, image_id))

    # ---- fleet: campaigns -------------------------------------------------------------------
    def add_campaign(self, image: str, state: str, now: float, deadline: float,
                     policy: str) -> int:
        return self._scalar("INSERT INTO campaigns(image, state, created, deadline, policy) "
                            "VALUES (?,?,?,?,?) RETURNING id", (image, state, now, deadline,
                                                                 policy))

    def campaigns_of_image(self, image_id: str, states: tuple[str, ...]) -> list[Row]:
        return self._all(f"SELECT * FROM campaigns WHERE image=? AND state IN ({_qs(states)}) "
                         "ORDER BY id", (image_id, *states))

    def set_campaign_state(self, n: int, state: str, reason: str | None) -> None:
        self._exec("UPDATE campaigns SET state=?, reason=? WHERE id=?", (state, reason, n))

    def set_released(self, n: int, released: int) -> None:
        self._exec("UPDATE campaigns SET released=? WHERE id=?", (released, n))

    def set_acknowledged(self, n: int, acknowledged: int) -> None:
        self._exec("UPDATE campaigns SET acknowledged=? WHERE id=?", (acknowledged, n))

    def lock_campaign(self, n: int) -> None:
        """Serialise changes to campaign ``n`` across gateways (a no-op on SQLite, whose
        write transactions are serial anyway)."""
        if self.dialect == "postgresql":
            self._exec("SELECT id FROM campaigns WHERE id=? FOR UPDATE", (n,))

    def lock_downloads(self) -> None:
        """Serialise download-slot counting across gateways until the transaction ends (caps
        stay exact when two gateways offer at once)."""
        if self.dialect == "postgresql":
            self._exec("SELECT pg_advisory_xact_lock(?)", (DOWNLOADS_LOCK,))

    # ---- fleet: jobs ----------------------------------------------------------------------
    def add_jobs(self, rows: Iterable[tuple[int, str, str, int, float, int]]) -> None:
        """(campaign, device, state, size, updated, phase) rows (PostgreSQL: by COPY, one
        stream; an executemany of 100,000 jobs took 7 s there)."""
        if self.dialect == "postgresql":
            self._copy("COPY jobs (campaign, device, state, size, updated, phase) FROM STDIN",
                       rows)
            return
        self._many("INSERT INTO jobs(campaign, device, state, size, updated, phase) "
                   "VALUES (?,?,?,?,?,?)", rows)

    def add_job(self, campaign: int, device: str, state: str, size: int, now: float,
                phase: int) -> int:
        return self._scalar("INSERT INTO jobs(campaign, device, state, size, updated, phase) "
                            "VALUES (?,?,?,?,?,?) RETURNING id",
                            (campaign, device, state, size, now, phase))

    def delete_job(self, job_id: int) -> None:
        self._exec("DELETE FROM jobs WHERE id=?", (job_id,))

    def locked_job(self, job_id: int) -> Row | None:
        """The job, its row locked until the transaction ends (PostgreSQL: another gateway's
        change to it waits; SQLite: write transactions are serial)."""
        return self._one("SELECT * FROM jobs WHERE id=?" + self._for_update, (job_id,))

    def set_job(self, job_id: int, state: str, result: int | None, progress: int, now: float,
                not_before: float | None) -> None:
        self._exec("UPDATE jobs SET state=?, result=?, progress=?, updated=?, not_before=? "
                   "WHERE id=?", (state, result, progress, now, not_before, job_id))

    def set_job_progress(self, job_id: int, progress: int, now: float) -> None:
        self._exec("UPDATE jobs SET progress=?, updated=? WHERE id=?", (progress, now, job_id))

    def active_job(self, device_id: str, active: tuple[str, ...], *,
                   lock: bool = False) -> Row | None:
        """The device's newest job in one of the ``active`` states (``lock``: as
        ``locked_job``)."""
        return self._one(f"SELECT * FROM jobs WHERE device=? AND state IN ({_qs(active)}) "
                         "ORDER BY id DESC LIMIT 1" + (self._for_update if lock else ""),
                         (device_id, *active))

    def devices_with_job(self, states: tuple[str, ...]) -> set[str]:
        """The devices with a job in one of ``states`` (a campaign's targets are checked
        against it in one statement)."""
        return {r["device"] for r in self._all(
            f"SELECT DISTINCT device FROM jobs WHERE state IN ({_qs(states)})", states)}

    def last_job(self, device_id: str) -> Row | None:
        return self._one("SELECT * FROM jobs WHERE device=? ORDER BY id DESC LIMIT 1",
                         (device_id,))

    def devices_in_phases(self, n: int, phases: list[int]) -> list[str]:
        return [r["device"] for r in self._all(
            f"SELECT device FROM jobs WHERE campaign=? AND phase IN ({_qs(tuple(phases))})",
            (n, *phases))]

    def jobs_past_deadline(self, active: tuple[str, ...], now: float) -> list[Row]:
        return self._all(f"SELECT jobs.* FROM jobs JOIN campaigns ON campaigns.id = jobs.campaign "
                         f"WHERE jobs.state IN ({_qs(active)}) AND campaigns.deadline < ? "
                         "ORDER BY jobs.id", (*active, now))

    def jobs_in_state_since(self, state: str, before: float) -> list[Row]:
        """Jobs in ``state`` not changed since ``before``."""
        return self._all("SELECT * FROM jobs WHERE state=? AND updated < ? ORDER BY id",
                         (state, before))

    def take_sweeper(self) -> bool:
        """True when this connection is (now) the one that runs the sweeper: a session
        advisory lock on PostgreSQL, released when its gateway's connection ends (a gateway
        killed hands the sweeping to another within a sweep); always on SQLite."""
        if self.dialect != "postgresql":
            return True
        return bool(self._scalar("SELECT pg_try_advisory_lock(?)", (SWEEPER_LOCK,)))

    @property
    def _for_update(self) -> str:
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    # ---- compression and deltas (gateway/deltas.py) --------------------------------------
    def set_no_delta(self, device_id: str, base: str) -> None:
        self._exec("UPDATE devices SET no_delta=? WHERE id=?", (base, device_id))

    def image_digest_at(self, device_class: str, seq: int) -> str | None:
        """The digest of the image of ``device_class`` with ``seq`` (what such a device runs)."""
        return self._scalar("SELECT digest FROM images WHERE class=? AND seq=? "
                            "ORDER BY created DESC LIMIT 1", (device_class, seq))

    def has_image_digest(self, digest: str, device_class: str) -> bool:
        return self._one("SELECT id FROM images WHERE digest=? AND class=?",
                         (digest, device_class)) is not None

    def delta_bases(self, image: Row, limit: int) -> list[Row]:
        """The newest ``limit`` earlier images of the class with no delta to ``image`` yet."""
        return self._all("SELECT * FROM images WHERE class=? AND seq<? AND digest NOT IN "
                         "(SELECT base FROM variants WHERE image=?) ORDER BY seq DESC LIMIT ?",
                         (image["class"], image["seq"], image["id"], limit))

    def variant(self, variant_id: str) -> Row | None:
        return self._one("SELECT * FROM variants WHERE id=?", (variant_id,))

    def variant_sent(self, uri_id: str) -> str | None:
        """Digest of the blob a signed variant serves under ``f/<uri_id>``."""
        return self._scalar("SELECT sent FROM variants WHERE uri=? AND manifest IS NOT NULL "
                            "LIMIT 1", (uri_id,))

    def variant_like(self, image_id: str, base: str, compression: int) -> Row | None:
        return self._one("SELECT * FROM variants WHERE image=? AND base=? AND compression=?",
                         (image_id, base, compression))

    def variants_of(self, image_id: str | None, signed_only: bool = False) -> list[Row]:
        where = " AND manifest IS NOT NULL" if signed_only else ""
        if image_id is None:
            return self._all(f"SELECT * FROM variants WHERE 1=1{where} ORDER BY created, id")
        return self._all(f"SELECT * FROM variants WHERE image=?{where} ORDER BY created, id",
                         (image_id,))

    def add_variant(self, variant_id: str, uri_id: str, image_id: str, base: str,
                    compression: int, sent: str, sent_size: int, manifest: bytes | None,
                    now: float) -> None:
        self._exec("INSERT INTO variants(id, uri, image, base, compression, sent, sent_size, "
                   "manifest, created) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                   (variant_id, uri_id, image_id, base, compression, sent, sent_size, manifest,
                    now))

    def sign_variant(self, variant_id: str, manifest: bytes) -> None:
        self._exec("UPDATE variants SET manifest=? WHERE id=?", (manifest, variant_id))

    def delete_variants(self, image_id: str) -> list[str]:
        """Drop an image's variants; returns the blobs (digests) no image or variant uses now."""
        sent = [r["sent"] for r in self._all("SELECT DISTINCT sent FROM variants WHERE image=?",
                                             (image_id,))]
        self._exec("DELETE FROM variants WHERE image=?", (image_id,))
        return [d for d in sent
                if self._one("SELECT 1 AS x FROM variants WHERE sent=? UNION ALL "
                             "SELECT 1 AS x FROM images WHERE digest=?", (d, d)) is None]

    def set_job_variant(self, job_id: int, variant: str, sent_size: int) -> None:
        self._exec("UPDATE jobs SET variant=?, sent_size=? WHERE id=?",
                   (variant, sent_size, job_id))

    # ---- whole tables (``fota-gateway migrate``) -----------------------------------------
    def table_rows(self, table: str, batch: int = 2000) -> Iterator[list[Row]]:
        """Every row of ``table`` (one of ``TABLES``) in primary key order, ``batch`` at a
        time."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        cur = self._exec(f"SELECT * FROM {table} ORDER BY id")
        while rows := cur.fetchmany(batch):
            yield list(map(self._dict, rows))

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


EVENT_INSERT = "INSERT INTO events(time, device, campaign, kind, detail) VALUES (?,?,?,?,?)"
EVENT_SQL = EVENT_INSERT + " RETURNING id"
#: what a report reads of its device's row as it was (``Repo.report_device``; its key and
#: counter: ``DeviceAuth.check_report`` in the same batch)
REPORT_COLUMNS = ("old.id, old.class, old.seq, old.state, old.result, old.address, old.key, "
                  "old.counter")
REPORT_NAMES = (*(c.strip()[4:] for c in REPORT_COLUMNS.split(",")), "active_job")  # their keys
REPORTED_SQL = ("UPDATE devices SET class=?, seq=?, state=?, result=?, progress=?, last_seen=?, "
                "address=?, caps=? WHERE id=?")
ADD_REPORTED_SQL = ("INSERT INTO devices(id, class, seq, state, result, progress, last_seen, "
                    "address, caps) VALUES (?,?,?,?,?,?,?,?,?)")
RAISE_COUNTER_SQL = "UPDATE devices SET counter=? WHERE id=? AND counter<?"
FILED_SQL = "SELECT upto FROM events_filed"
FILE_SQL = ("INSERT INTO events_by_device(device, event) SELECT device, id FROM events WHERE "
            "id > ? AND id <= ? AND device IS NOT NULL ORDER BY device, id")
FILED_UPTO_SQL = "UPDATE events_filed SET upto=?"
MAX_ID = 2**63 - 1


def rows_sql(sql: str, n: int) -> str:
    """SQLite: the write ``sql`` (one of ``MANY_ROWS``, one row's) for ``n`` rows in one
    statement (ValueError for another). One statement is one step of the engine instead of one
    a row, and AUTOINCREMENT writes ``sqlite_sequence`` once per statement (an events row cost
    2.8 us by executemany, 1.6 us so). Needs SQLite >= 3.33 (UPDATE ... FROM)."""
    if sql == EVENT_INSERT:
        return sql.replace("(?,?,?,?,?)", ",".join(["(?,?,?,?,?)"] * n))
    if sql == REPORTED_SQL:
        return ("UPDATE devices SET class=v.column1, seq=v.column2, state=v.column3, "
                "result=v.column4, progress=v.column5, last_seen=v.column6, address=v.column7, "
                "caps=v.column8 FROM (VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?)"] * n)
                + ") AS v WHERE devices.id = v.column9")
    raise ValueError(f"no statement of many rows for {sql!r}")


MANY_ROWS = (EVENT_INSERT, REPORTED_SQL)  # what ``rows_sql`` writes several rows of at once


DOWNLOADS_LOCK = 0x666F7461_0002  # pg_advisory_xact_lock key: "fota", 2
SWEEPER_LOCK = 0x666F7461_0003  # pg_try_advisory_lock key: "fota", 3


def _row_dict(r: Any) -> Row:
    """A ``sqlite3.Row`` as a dict, by position (``dict(row)`` looks each column up by name:
    twice as slow, and a batch of reports reads hundreds of rows)."""
    return dict(zip(r.keys(), r))


def _active_job_sql(active: tuple[str, ...]) -> str:
    """The column ``active_job`` of a report's device row ``old``: its newest job in one of
    the ``active`` states (``active``'s values are the statement's first arguments)."""
    return (f"(SELECT id FROM jobs WHERE jobs.device = old.id AND jobs.state IN ({_qs(active)}) "
            "ORDER BY jobs.id DESC LIMIT 1) AS active_job")


def _qs(values: tuple[Any, ...]) -> str:
    return ",".join("?" * len(values))


#: Every table, parents before children (foreign keys).
TABLES = ("devices", "images", "campaigns", "jobs", "events", "variants")
#: Tables whose ids the database hands out.
SERIAL_TABLES = ("campaigns", "jobs", "events")


def tags_json(tags: list[str]) -> str:
    return json.dumps(tags)
