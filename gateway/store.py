"""The gateway's store as ``Fleet`` uses it: synchronously, on the store's own thread.

The SQL is ``storage.repo.Repo``'s, the connection, pragmas and migrations the engine
backend's (``storage.sqlite``: a file, the default; ``storage.postgres``: a database several
gateways share). This class adds the nestable ``transaction()`` the fleet's methods wrap their
work in: one atomic, durable unit, committed before the caller answers, and the group commit
(``batch``/``group``) that ``storage.worker.StoreWorker`` drives from the thread that owns the
store once the gateway serves (``bind_thread``: a call from any other thread, such as the event
loop, raises instead of waiting on the database there).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ContextManager

import psycopg

from proto.codes import JobState

from . import metrics
from .storage import backend_for, notify
from .storage.repo import (ADD_REPORTED_SQL, EVENT_INSERT, EVENT_SQL, FILE_MOST, FILE_SQL,
                           FILED_UPTO_SQL, MANY_ROWS, RAISE_COUNTER_SQL, REPORTED_SQL, Repo, Row,
                           rows_sql, tags_json)
from .storage.rowcache import RowCache
from .storage.schema import MIGRATIONS
from .storage.sqlite import SqliteBackend
from .storage.worker import StoreUnavailable

__all__ = ["MIGRATIONS", "Store", "tags_json"]

log = logging.getLogger("fota.gateway")
RECONNECT_SECONDS = 1.0  # between tries to replace a dropped PostgreSQL connection
WRITE_LOCK = 0x666F7461_0004  # pg_advisory_xact_lock key: "fota", 4
ROWS_MAX = 256  # rows in one statement of a fast SQLite batch's deferred writes at most
#: writes the row cache follows (storage/rowcache.py): any other makes it stale
FOLLOWED = frozenset((EVENT_SQL, EVENT_INSERT, ADD_REPORTED_SQL, FILE_SQL, FILED_UPTO_SQL))
MANY_ROWS_OK = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM


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
        self._batch: list[Callable[[bool], None]] | None = None  # group commit: see batch()
        self._grouping = False
        self._batch_open = False  # the open transaction is the batch's
        self._to_announce: list[str] = []  # device ids for the other gateways, at commit
        self.commits = 0  # transactions committed (fsyncs on SQLite)
        self._began = 0.0  # perf_counter at BEGIN (fota_store_transaction_seconds)
        self._owner: int | None = None  # the only thread that may use the connection
        self._pipeline: Any = None  # PostgreSQL: the batch's pipeline (see _unit_of_batch)
        #: a fast batch's writes that wait for its next other statement (or its commit) to
        #: go as one executemany each (SQL -> rows; events: with the event to give its id)
        self._deferred: dict[str, list[tuple[tuple[Any, ...], Row | None]]] = {}
        self._ids_due: list[tuple[Any, list[Row]]] = []  # (cursor, events) read after the sync
        self._rows_sql: dict[tuple[str, int], str] = {}  # (SQL, rows) -> SQL of that many rows
        #: a fast batch's event insert (PostgreSQL: RETURNING its id, read after the sync)
        self._event_sql = EVENT_SQL if self.dialect == "postgresql" else EVENT_INSERT
        self._poisoned: Exception | None = None  # a database error in the open batch
        self._failure_logged = -60.0
        self._reconnected = -RECONNECT_SECONDS
        self._reporting: list[str] = []  # devices the open batch's reports are about
        self._careful = True  # the open batch: a savepoint per unit, no pipeline
        self._fast_unit = FastUnit(self)  # see transaction()
        self._rerun = False  # the fast batch failed in a way a careful run may not
        self._writes = 0  # write statements run (a unit that raised: did it write?)
        #: a fast batch's devices until their report (read at once as it began; None: unknown)
        self._devices: dict[str, Row | None] | None = None
        #: SQLite: the rows of the last batches' reports, as they committed (rowcache.py)
        self.rows = RowCache() if self.dialect == "sqlite" else None
        #: PostgreSQL: the server process of the connection (notifications it sent are ours)
        self.backend_pid = db.info.backend_pid if self.dialect == "postgresql" else 0

    def check_connection(self) -> None:
        """PostgreSQL: replace a connection the database dropped (a restart, a failover, an
        administrator) before the next unit of work, at most one try a second; until then
        what uses the store is answered 5.03. A failed try raises (the caller logs it)."""
        if self.dialect != "postgresql" or not (self.db.broken or self.db.closed):
            return
        now = time.monotonic()
        if now - self._reconnected < RECONNECT_SECONDS:
            return
        self._reconnected = now
        db = self.backend.connect()
        old, self.db, self.conn = self.db, db, db
        self.backend_pid = db.info.backend_pid
        self._sweeper = False  # its session lock ended with the old connection
        self._pipeline, self._ids_due, self._poisoned, self._devices = None, [], None, None
        self._deferred = {}
        try:
            old.close()
        except Exception:
            pass
        log.info("store: connected to the database again")

    def bind_thread(self, ident: int | None) -> None:
        """From now on only thread ``ident`` may run statements (None: any thread)."""
        self._owner = ident

    def _check_thread(self) -> None:
        if self._owner is not None and threading.get_ident() != self._owner:
            raise RuntimeError("store used outside its thread (a database call on the event "
                               "loop?): go through StoreWorker.call")

    def _exec(self, sql: str, args: Any = (), followed: bool = False) -> Any:
        """``followed``: a write the row cache follows (else only ``FOLLOWED``'s are)."""
        self._check_thread()
        if self._deferred:
            self._send_deferred()  # they go first: every statement sees what came before
        if not sql.startswith("SELECT"):
            self._writes += 1  # see _unit_of_batch
            if self.rows is not None and not followed and sql not in FOLLOWED:
                self.rows.stale = True
        return super()._exec(sql, args)

    def _bulk(self) -> None:
        """Before a many-row write: the deferred ones first; the row cache cannot follow it."""
        self._check_thread()
        if self._deferred:
            self._send_deferred()
        self._writes += 1
        if self.rows is not None:
            self.rows.stale = True

    def _many(self, sql: str, rows: Any) -> None:
        self._bulk()
        super()._many(sql, rows)

    def _copy(self, sql: str, rows: Any) -> None:
        self._bulk()
        super()._copy(sql, rows)

    def _defer(self, sql: str, args: tuple[Any, ...], ev: Row | None = None) -> None:
        """A write of a fast batch that nothing reads before the next statement: sent then,
        with the others of its kind, as one executemany (no Python per statement, no wait)."""
        self._writes += 1
        rows = self._deferred.get(sql)
        if rows is None:
            rows = self._deferred[sql] = []
        rows.append((args, ev))

    def _send_deferred(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for sql, rows in deferred.items():
            events = [ev for _, ev in rows if ev is not None]
            if self.dialect != "postgresql":
                # SQLite: no RETURNING for several rows. The batch holds the write lock and
                # AUTOINCREMENT hands out the next id to each row: the events got the ids
                # up to the last one inserted, in order.
                self._send_rows(sql, [args for args, _ in rows])
                if events:
                    last = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
                    for n, ev in enumerate(events, last - len(events) + 1):
                        ev["id"] = n
                continue
            cur = self.db.cursor()
            cur.executemany(self._q(sql), [args for args, _ in rows], returning=bool(events))
            if events:
                self._ids_due.append((cur, events))  # read after the commit's sync

    def _send_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """SQLite: ``rows`` of ``sql`` in order, a few statements of many rows each (sizes
        powers of two up to ``ROWS_MAX``: a bounded set of statements to prepare and cache)."""
        if (not MANY_ROWS_OK or len(rows) == 1 or sql not in MANY_ROWS
                or sql == REPORTED_SQL and len({r[-1] for r in rows}) != len(rows)):
            # (an UPDATE ... FROM takes one of the rows of a device named twice: not in order)
            self.db.executemany(sql, rows)
            return
        i = 0
        while i < len(rows):
            n = min(ROWS_MAX, 1 << (len(rows) - i).bit_length() - 1)
            key = (sql, n)
            many = self._rows_sql.get(key)
            if many is None:
                many = self._rows_sql[key] = rows_sql(sql, n)
            self.db.execute(many, [v for r in rows[i:i + n] for v in r])
            i += n

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> ContextManager[Any]:
        """One atomic, durable unit: committed (and fsynced) on exit, rolled back on error.
        Inside ``group()`` it is a savepoint of the batch's transaction instead (a fast
        batch's: no savepoint, see _unit_of_batch)."""
        if (self._depth == 1 and self._grouping and not self._careful
                and self._poisoned is None):
            return self._fast_unit  # the common case of a report: no generator to run
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self._grouping and self._depth <= 1:
            yield from self._unit_of_batch()
            return
        if self._batch_open and self._depth == 1:
            self._flush()  # anything else commits on its own: the batch goes first
        if self._depth:  # nested: the outer one commits
            yield self.db
            return
        self._began = time.perf_counter()
        self._begin()
        self._depth = 1
        try:
            yield self.db
            self._commit()
        except BaseException:
            self.backend.rollback(self.db)
            if self.rows is not None:
                self.rows.clear()
            self.pending_events.clear()
            self._to_announce.clear()
            raise
        finally:
            self._depth = 0
        self._announce()

    def announce_command(self, device_id: str) -> None:
        """Tell the other gateways on this database that ``device_id``'s command may have
        changed (storage/notify.py), when what changed it commits (at once outside a
        transaction)."""
        if self.dialect != "postgresql":
            return
        self._to_announce.append(device_id)
        if not self._depth:
            self._send_announcements()

    def _send_announcements(self) -> None:
        ids, self._to_announce = self._to_announce, []
        for payload in notify.chunks(ids):
            self.db.execute("SELECT pg_notify(%s, %s)", (notify.CHANNEL, payload))

    def _begin(self) -> None:
        self._check_thread()
        self.backend.begin(self.db)
        if self.dialect == "postgresql":
            # Gateways sharing the database write one transaction at a time: the row and
            # advisory locks taken inside (repo.py) then never wait on each other in different
            # orders, so no deadlock stalls a gateway's loop (its calls are synchronous).
            # With group commit a transaction is a whole burst of reports, so the wait is one
            # commit of the other gateway.
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))

    def _commit(self) -> None:
        if self._deferred:
            self._send_deferred()
        if self._to_announce:
            self._send_announcements()  # delivered with the commit, not before
        self.backend.commit(self.db)
        if self._pipeline is not None:
            self._end_pipeline(failed=False)  # the COMMIT was queued: now it is done
        if self.rows is not None:
            self.rows.committed()
        self.commits += 1
        metrics.STORE_SECONDS.observe(time.perf_counter() - self._began)

    def _announce(self) -> None:
        done, self.pending_events = self.pending_events, []
        if self.on_event is not None:
            for ev in done:
                self.on_event(ev)

    def _unit_of_batch(self) -> Iterator[Any]:
        """A unit of the batch's transaction. Careful: each unit in a savepoint, one that
        raises is rolled back alone. Fast (the worker's first try): the batch's devices are
        read in one statement (``_devices``), there is no savepoint, and its device updates
        and events go as one executemany each (``_defer``); on PostgreSQL the batch also runs
        in pipeline mode (a statement whose result nobody reads costs no round trip). A
        unit that raises before it wrote anything (a refusal) needs no savepoint; one that
        raises after it wrote, or a database error (in a pipeline it surfaces at a later read,
        maybe in another unit), rolls the batch back with ``rerun`` set: the worker runs it
        again carefully."""
        if self._poisoned is not None:
            raise StoreUnavailable(f"store unavailable: {self._poisoned}")
        if self._depth == 0:  # the batch's transaction starts with its first unit
            self._began = time.perf_counter()
            self._batch_open = True
            self._depth = 1
            try:
                if self.dialect == "postgresql" and not self._careful:
                    pipeline = self.db.pipeline()
                    pipeline.__enter__()
                    self._pipeline = pipeline
                self._begin()
                if not self._careful and self._reporting:
                    ids = sorted(set(self._reporting))
                    self._devices = dict.fromkeys(ids)
                    if self.rows is not None:
                        self.rows.check(self.db.execute("PRAGMA data_version").fetchone()[0],
                                        time.monotonic())
                        found, ids = self.rows.take(ids)
                        self._devices.update(found)
                    if ids:
                        self._devices.update(self.devices_for_reports(ids, JobState.ACTIVE))
            except Exception as e:
                self._poisoned = e
                raise
        if not self._careful:  # the batch has begun: as its next units
            with self._fast_unit as db:
                yield db
            return
        mark, announced = len(self.pending_events), len(self._to_announce)
        due = len(self._ids_due)
        self._depth = 2
        try:
            self.db.execute("SAVEPOINT unit")
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK TO SAVEPOINT unit")
            self.db.execute("RELEASE SAVEPOINT unit")
            del self.pending_events[mark:]
            del self._to_announce[announced:]
            del self._ids_due[due:]
            raise
        else:
            self.db.execute("RELEASE SAVEPOINT unit")
        finally:
            self._depth = 1

    def _insert_event(self, ev: Row, args: tuple[Any, ...]) -> None:
        if self._batch_open and not self._careful:  # its id: once its executemany ran
            self._defer(self._event_sql, args, ev)
        else:
            super()._insert_event(ev, args)

    def _end_pipeline(self, failed: bool) -> None:
        """Leave pipeline mode (a sync: every queued statement has run, or this raises) and
        read the ids of the batch's events."""
        pipeline, self._pipeline = self._pipeline, None
        due, self._ids_due = self._ids_due, []
        self._devices, self._deferred = None, {}
        if pipeline is None:
            return
        if failed:
            pipeline.__exit__(StoreUnavailable, StoreUnavailable("batch failed"), None)
            return
        pipeline.__exit__(None, None, None)
        for cur, events in due:
            for ev in events:
                ev["id"] = cur.fetchone()["id"]
                cur.nextset()

    @contextmanager
    def batch(self, devices: list[str] | None = None,
              careful: bool = True) -> Iterator["Batch"]:
        """Group commit: the transactions made inside ``group()`` while the batch is open share
        one commit (one fsync), each in its own savepoint (one that fails is rolled back
        alone). What must wait for durability (the answer to a report) goes to
        ``after_commit`` and runs once the batch committed, with True; with False when the
        commit failed (nothing of the batch is kept). Any other transaction meanwhile commits
        the batch first. ``devices``: the devices its reports are about (PostgreSQL reads
        them in one statement, ``_devices``); ``careful``: see _unit_of_batch.
        The ``Batch`` it gives says at the end whether it committed, or failed in a way that
        a careful run may not (``rerun``)."""
        status = Batch()
        if self._batch is not None or self._depth:
            yield status
            return
        self._batch = []
        self._reporting = devices or []
        self._careful = careful
        try:
            yield status
        finally:
            status.committed, status.rerun = self._flush(), self._rerun
            self._batch = None
            self._reporting = []
            self._devices = None
            self._careful, self._rerun = True, False

    @contextmanager
    def group(self) -> Iterator[None]:
        """Transactions in here join the open batch (without one: they commit as usual)."""
        if self._batch is None or self._grouping:
            yield
            return
        self._grouping = True
        try:
            yield
        finally:
            self._grouping = False

    def _flush(self) -> bool:
        """Commit the open batch (if one is open); answer its waiters; True when committed."""
        waiting, self._batch = self._batch or [], []
        ok = True
        if self._batch_open:
            self._batch_open = False
            try:
                if self._poisoned is not None:
                    raise self._poisoned
                self._commit()
            except Exception as e:  # full disk, database gone: answer that, keep serving
                ok = False
                if (not self._careful and self._poisoned is None
                        and not getattr(self.db, "broken", False)):
                    self._rerun = True  # a statement's error surfaced at the commit's sync
                now = time.monotonic()
                if (self._poisoned is None and not self._rerun  # else answered or run again
                        and now - self._failure_logged >= 60.0):  # one line a minute
                    self._failure_logged = now
                    log.error("store: a batch of %d answers failed to commit: %s (answered 5.03;"
                              " more are not logged for a minute)", len(waiting), e)
                try:
                    self._end_pipeline(failed=True)
                except Exception:
                    pass
                try:
                    self.backend.rollback(self.db)
                except Exception:
                    pass
                if self.rows is not None:
                    self.rows.clear()
                self.pending_events.clear()
                self._to_announce.clear()
            finally:
                self._depth = 0
                self._poisoned = None
        if ok:
            self._announce()
        for answer in waiting:
            answer(ok)
        return ok

    def after_commit(self, answer: Callable[[bool], None]) -> None:
        """Run ``answer(True)`` once what was done so far is durable (now, outside a batch)."""
        if not self._batch_open:
            answer(True)
        else:
            self._batch.append(answer)

    def event(self, kind: str, detail: str, *, device: str | None = None,
              campaign: int | None = None) -> dict[str, Any]:
        if self._depth > 1 or (self._depth and not self._batch_open):  # inside one already
            return super().event(kind, detail, device=device, campaign=campaign)
        with self.transaction():
            return super().event(kind, detail, device=device, campaign=campaign)

    # ---- a fast batch's reports read their devices from _devices (no round trip) -----------
    # It is right because the rows are locked until the commit and the batch's own writes to
    # what a report reads go through here (its key's counter) or take the row out (its report:
    # a later one reads the database); a unit that fails after writing sends the whole batch
    # to a careful run, which reads the database.
    def report_device(self, device_id: str, cls: str, seq: int, state: int, result: int,
                      progress: int, address: str, now: float, caps: int,
                      active: tuple[str, ...]) -> Row | None:
        known = self._devices
        if (known is None or device_id not in known
                or active is not JobState.ACTIVE and active != JobState.ACTIVE):
            return super().report_device(device_id, cls, seq, state, result, progress, address,
                                         now, caps, active)
        # the row read goes: a second report of the device in this batch (rare: a device
        # waits for its answer) reads the database, which has its writes by then
        old = known.pop(device_id)
        if old is not None:
            if self._batch_open and not self._careful:
                self._defer(REPORTED_SQL,
                            (cls, seq, state, result, progress, now, address, caps, device_id))
                if self.rows is not None:
                    self.rows.stage(old, cls, seq, state, result, address)
            else:
                self.update_reported_device(device_id, cls, seq, state, result, progress, now,
                                            address, caps)
        return old

    def device_key(self, device_id: str) -> Row | None:
        known = self._devices
        if known is None or device_id not in known:
            return super().device_key(device_id)
        row = known[device_id]
        if row is None or row["key"] is None:
            return row  # its "key" and "counter" are what callers read (and never change)
        return {"key": bytes(row["key"]), "counter": row["counter"]}

    def raise_counter(self, device_id: str, counter: int) -> None:
        row = self._devices.get(device_id) if self._devices is not None else None
        if row is None:
            super().raise_counter(device_id, counter)  # the row cache cannot follow it
            return
        # the batch's row follows it (and the row cache, when its report stages the row)
        self._exec(RAISE_COUNTER_SQL, (counter, device_id, counter), followed=True)
        if row["counter"] < counter:
            self._devices[device_id] = {**row, "counter": counter}  # type: ignore[index]

    def file_events(self, most: int = FILE_MOST) -> int:  # type: ignore[override]
        """The sweeper's part (every second): file the events written since by device
        (Repo.file_events), in a transaction of its own; returns how many ids it passed."""
        with self.transaction():
            return super().file_events(most)

    def take_sweeper(self) -> bool:
        if self._sweeper:
            return True
        self._sweeper = super().take_sweeper()
        return self._sweeper


class FastUnit:
    """A unit of a fast batch whose transaction has begun (``Store._unit_of_batch``): no
    savepoint; one that raises after it wrote, or on a database error, sends the batch to a
    careful run. One object per store, entered by one unit at a time (``Store.transaction``
    hands it out only at depth 1)."""

    __slots__ = ("store", "writes")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0

    def __enter__(self) -> Any:
        s = self.store
        self.writes = s._writes
        s._depth = 2
        return s.db

    def __exit__(self, kind: Any, e: Any, tb: Any) -> None:
        s = self.store
        s._depth = 1
        if kind is not None and (s._writes != self.writes
                                 or isinstance(e, (psycopg.Error, sqlite3.Error))):
            s._poisoned, s._rerun = e, True


class Batch:
    """What became of a ``Store.batch``."""

    committed = False
    rerun = False


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
