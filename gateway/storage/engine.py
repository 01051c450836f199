"""Run units of work on the database without blocking the event loop, several per commit.

A unit of work is a plain function of a ``Repo`` (``fn(repo) -> result``) that runs inside a
transaction. ``Engine.write`` queues it for the writer thread, which takes every unit waiting
(up to ``max_batch``), runs each inside its own savepoint (a unit that raises is rolled back
alone and its caller gets the exception), and commits once: one fsync for the batch (group
commit). The caller's future resolves only after that commit, so an answer built from it
still follows a durable state. Batches form by themselves under load (units queue while the
previous commit is on disk) and cost nothing when idle (a lone unit commits at once).

``Engine.read`` runs a unit on a separate reader thread and connection (SQLite WAL and
PostgreSQL both let readers go on beside the writer), so views do not wait behind commits.
Events a committed unit wrote go to ``on_event``, on the writer thread, in commit order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .repo import Repo, Row

log = logging.getLogger("fota.gateway")
T = TypeVar("T")
Unit = Callable[[Repo], Any]
BATCH_TRIES = 5  # a batch that loses a deadlock/serialization check is run again, this often


class Backend(Protocol):
    dialect: str
    retryable: tuple[type[BaseException], ...]

    def connect(self, read_only: bool = False) -> Any: ...
    def begin(self, db: Any) -> None: ...
    def begin_read(self, db: Any) -> None: ...
    def commit(self, db: Any) -> None: ...
    def rollback(self, db: Any) -> None: ...
    def migrate(self, db: Any) -> None: ...


class StoreUnavailable(Exception):
    """The transaction could not commit (disk full, database gone): nothing of it is kept."""


@dataclass
class Stats:
    units: int = 0  # units of work committed or refused
    commits: int = 0  # transactions committed (fsyncs, on SQLite)
    retries: int = 0  # batches run again after a deadlock/serialization failure


_STOP = object()


class _Worker(threading.Thread):
    def __init__(self, engine: "Engine", name: str, writer: bool) -> None:
        super().__init__(name=name, daemon=True)
        self.engine = engine
        self.writer = writer
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ready: Future[None] = Future()

    def run(self) -> None:
        e = self.engine
        try:
            db = e.backend.connect(read_only=not self.writer)
            if self.writer:
                e.backend.migrate(db)
        except BaseException as exc:
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)
        repo = Repo(db, e.backend.dialect, e.clock)
        try:
            while True:
                item = self.q.get()
                if item is _STOP:
                    return
                batch = [item]
                while len(batch) < e.max_batch:
                    try:
                        more = self.q.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        self.q.put(_STOP)  # finish this batch, then stop
                        break
                    batch.append(more)
                batch = [(fn, fut) for fn, fut in batch if fut.set_running_or_notify_cancel()]
                if batch:
                    (self._write if self.writer else self._read)(db, repo, batch)
        finally:
            e.backend.rollback(db)
            db.close()

    def _read(self, db: Any, repo: Repo, batch: list[tuple[Unit, Future[Any]]]) -> None:
        for fn, fut in batch:
            try:
                self.engine.backend.begin_read(db)
                result = fn(repo)
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                repo.pending_events.clear()
                self.engine.backend.rollback(db)

    def _write(self, db: Any, repo: Repo, batch: list[tuple[Unit, Future[Any]]]) -> None:
        e = self.engine
        # Optimistic: units run without savepoints (two round trips each saved). When one
        # raises, the batch is rolled back and run again with a savepoint per unit; a lone
        # unit's rollback is its own.
        savepoints = False
        for attempt in range(BATCH_TRIES + 1):
            outcomes: list[tuple[bool, Any, list[Row]]] = []
            try:
                e.backend.begin(db)
                for fn, _ in batch:
                    outcomes.append(self._unit(db, repo, fn, savepoints))
                e.backend.commit(db)
            except _Refused as r:
                e.backend.rollback(db)
                repo.pending_events.clear()
                if len(batch) > 1:
                    savepoints = True
                    continue
                outcomes = [(False, r.exc, [])]
            except e.backend.retryable:
                e.backend.rollback(db)
                repo.pending_events.clear()
                e.stats.retries += 1
                time.sleep(0.001 * (attempt + 1))
                continue
            except Exception as exc:  # the commit failed: nothing of the batch is kept
                log.error("store: transaction failed: %s", exc)
                try:
                    e.backend.rollback(db)
                except Exception:
                    pass
                repo.pending_events.clear()
                for _, fut in batch:
                    fut.set_exception(StoreUnavailable(f"store unavailable: {exc}"))
                return
            else:
                e.stats.commits += 1
            e.stats.units += len(batch)
            for (_, fut), (ok, value, events) in zip(batch, outcomes):
                for ev in events:
                    if e.on_event is not None:
                        e.on_event(ev)
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            return
        for _, fut in batch:
            fut.set_exception(StoreUnavailable("store busy: gave up after "
                                               f"{BATCH_TRIES} conflicting tries"))

    def _unit(self, db: Any, repo: Repo, fn: Unit, savepoint: bool) -> tuple[bool, Any, list[Row]]:
        """Run one unit; with ``savepoint`` a unit's own exception rolls back only the unit.
        Deadlock/serialization failures propagate: the whole batch runs again."""
        mark = len(repo.pending_events)
        if savepoint:
            db.execute("SAVEPOINT unit")
        try:
            value = fn(repo)
        except self.engine.backend.retryable:
            raise
        except Exception as exc:
            if not savepoint:
                raise _Refused(exc) from exc
            db.execute("ROLLBACK TO SAVEPOINT unit")
            db.execute("RELEASE SAVEPOINT unit")
            del repo.pending_events[mark:]
            return False, exc, []
        if savepoint:
            db.execute("RELEASE SAVEPOINT unit")
        events = repo.pending_events[mark:]
        del repo.pending_events[mark:]
        return True, value, events


class _Refused(Exception):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class Engine:
    """One writer thread (group commit) and one reader thread over ``backend``."""

    def __init__(self, backend: Backend, *, on_event: Callable[[Row], None] | None = None,
                 clock: Callable[[], float] = time.time, max_batch: int = 256) -> None:
        self.backend = backend
        self.on_event = on_event  # called on the writer thread after each commit
        self.clock = clock
        self.max_batch = max_batch
        self.stats = Stats()
        self._writer = _Worker(self, "store-writer", writer=True)
        self._reader = _Worker(self, "store-reader", writer=False)
        self._writer.start()
        try:
            self._writer.ready.result()  # migrations ran (or the error is raised here)
            self._reader.start()
            self._reader.ready.result()
        except BaseException:
            self.close()
            raise

    @property
    def dialect(self) -> str:
        return self.backend.dialect

    def submit(self, fn: Unit, *, read: bool = False) -> Future[Any]:
        fut: Future[Any] = Future()
        (self._reader if read else self._writer).q.put((fn, fut))
        return fut

    async def write(self, fn: Callable[[Repo], T]) -> T:
        """Run ``fn`` in a transaction; returns once that transaction is committed."""
        return await asyncio.wrap_future(self.submit(fn))

    async def read(self, fn: Callable[[Repo], T]) -> T:
        """Run ``fn`` on a consistent snapshot; a write in it raises."""
        return await asyncio.wrap_future(self.submit(fn, read=True))

    def write_sync(self, fn: Callable[[Repo], T]) -> T:
        """``write`` for callers outside the event loop (command line tools, tests)."""
        return self.submit(fn).result()

    def read_sync(self, fn: Callable[[Repo], T]) -> T:
        return self.submit(fn, read=True).result()

    def close(self) -> None:
        for w in (self._writer, self._reader):
            if w.is_alive():
                w.q.put(_STOP)
                w.join(timeout=30)
