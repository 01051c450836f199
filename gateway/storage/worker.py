"""The gateway's store on its own thread: no database call runs on the event loop.

Every operation that touches the database (a ``Fleet`` method, a view, the sweeper) is handed
to ``StoreWorker.call`` as a plain synchronous function; the one thread that owns the store's
connection runs it and the awaiting handler resumes with its result. ``Fleet`` stays
synchronous (tested in-process with a fake clock); only this boundary is async.

Group commit: the thread takes every unit waiting (up to ``max_batch``). Consecutive
``grouped`` units (device reports) run inside one ``Store.batch()``, each in ``Store.group()``,
and their results are handed back only after the batch committed, so a report is still
answered only once it is durable, and a burst of reports costs one commit (one fsync). The
batch runs fast first (its devices read in one statement, no savepoints; on PostgreSQL in
pipeline mode); when a unit raised after it wrote, or the database refused a statement, it is
rolled back and run again carefully (a savepoint per unit: the one at fault fails alone).
Any other unit runs on its own, committing its own transactions. Batches form by themselves
under load: reports queue while the previous commit is on disk.

A commit that fails answers every unit of its batch with ``StoreUnavailable`` (the handlers
answer 5.03); nothing of the batch is kept. ``pending`` bounds the units queued from the
device port (``full``), so a flood cannot grow the queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from .. import metrics


log = logging.getLogger("fota.gateway")
T = TypeVar("T")
DEFAULT_MAX_BATCH = 256  # units per commit at most
DEFAULT_MAX_PENDING = 4096  # units waiting for the thread at most (``full`` beyond)
_STOP = object()


class StoreUnavailable(Exception):
    """The transaction could not commit (disk full, database gone): nothing of it is kept."""


class Batching(Protocol):
    """What ``gateway.store.Store`` offers for group commit."""

    def batch(self, devices: list[str] | None = None, careful: bool = True) -> Any: ...
    def group(self) -> Any: ...
    def bind_thread(self, ident: int | None) -> None: ...
    def check_connection(self) -> None: ...


class StoreWorker:
    def __init__(self, store: Batching, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.pending = 0  # units queued or running (read on the loop for ``full``)
        self.units = 0  # units run
        self.batches = 0  # batches taken (a batch of reports is one commit)
        self.reruns = 0  # runs of reports run again carefully (gateway/store.py)
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._for_loop: list[tuple[Any, bool, Any]] = []  # asyncio futures settled, to send
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="fota-store", daemon=True)
        self._thread.start()
        store.bind_thread(self._thread.ident)  # from now on only this thread uses it

    def full(self) -> bool:
        """True when ``max_pending`` units wait: the caller sheds load (5.03) instead."""
        return self.pending >= self.max_pending

    def submit(self, fn: Callable[[], T], grouped: bool = False,
               device: str | None = None) -> Future[T]:
        """Queue ``fn`` from any thread; its result comes in a ``concurrent.futures.Future``."""
        fut: Future[T] = Future()
        self._put((fn, fut, grouped, device))
        return fut

    def _put(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            self.pending += 1
        self._q.put(item)

    def call(self, fn: Callable[[], T], *, grouped: bool = False,
             device: str | None = None) -> asyncio.Future[T]:
        """Run ``fn`` on the store's thread, from the event loop: await the ``asyncio.Future``
        returned. ``grouped``: share the next commit (a report of ``device``: the batch reads
        its devices at once). The results of a batch reach the loop together (one wake-up of
        it, not one per unit)."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put((fn, fut, grouped, device))
        return fut

    def call_sync(self, fn: Callable[[], T]) -> T:
        """``call`` for code that is not on the loop (start-up, tests)."""
        return self.submit(fn).result()

    def close(self) -> None:
        """Finish what is queued, then stop; the store is the caller's again."""
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout=60)
        self.store.bind_thread(None)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._q.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._q.put(_STOP)  # this batch first
                    break
                batch.append(more)
            self.batches += 1
            try:
                self.store.check_connection()
            except Exception as e:  # the units below fail with the store: 5.03
                log.debug("store: cannot connect again yet: %s", e)
            for grouped, units in _runs(batch):
                live = [(fn, fut, d) for fn, fut, _, d in units
                        if (not fut.cancelled() if fut.__class__ is not Future
                            else fut.set_running_or_notify_cancel())]  # else nobody waits
                try:
                    (self._group if grouped else self._alone)(live)
                except BaseException as e:  # a bug here must not stop the store's thread
                    log.error("store: a batch failed: %s: %s", type(e).__name__, e)
                    lost = StoreUnavailable(f"store unavailable: {e}")
                    self._settle([fut for _, fut, _ in live], [(False, lost)] * len(live))
            with self._lock:
                self.pending -= len(batch)
            self._to_loops()

    def _settle(self, futs: list[Any], outcomes: list[tuple[bool, Any]]) -> None:
        """Each future's (ok, value): a ``concurrent.futures.Future`` at once, an asyncio
        future on its loop, with the rest of the batch (``_to_loops``)."""
        for fut, (ok, value) in zip(futs, outcomes):
            if fut.__class__ is Future:
                if not fut.done():
                    fut.set_result(value) if ok else fut.set_exception(value)
            else:
                self._for_loop.append((fut, ok, value))

    def _to_loops(self) -> None:
        settled, self._for_loop = self._for_loop, []
        if not settled:
            return
        first = settled[0][0].get_loop()
        loops: dict[Any, list[tuple[Any, bool, Any]]] = {first: settled}
        if any(item[0].get_loop() is not first for item in settled):  # seldom: several loops
            loops = {}
            for item in settled:
                loops.setdefault(item[0].get_loop(), []).append(item)
        for loop, items in loops.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

    def _alone(self, units: list[tuple[Callable[[], Any], Future[Any], Any]]) -> None:
        """Units that are not reports: each commits on its own (its transactions)."""
        for fn, fut, _ in units:
            self.units += 1
            try:
                outcome = (True, fn())
            except BaseException as e:  # refused or failed: its transaction rolled back
                outcome = (False, e)
            self._settle([fut], [outcome])

    def _group(self, units: list[tuple[Callable[[], Any], Future[Any], str | None]]) -> None:
        """Reports, one commit for them all: fast first; run again carefully (a savepoint
        each, gateway/store.py) if the fast run failed in a way that might be one unit's."""
        self.units += len(units)
        outcomes = self._try(units, careful=False)
        how = "fast"
        if outcomes is None:
            self.reruns += 1
            outcomes = self._try(units, careful=True)
            how = "careful"
        if any(isinstance(v, StoreUnavailable) for ok, v in outcomes if not ok):
            how = "failed"
        metrics.STORE_BATCHES.labels(how).inc()
        self._settle([fut for _, fut, _ in units], outcomes)

    def _try(self, units: list[tuple[Callable[[], Any], Future[Any], str | None]],
             careful: bool) -> list[tuple[bool, Any]] | None:
        outcomes: list[tuple[bool, Any]] = []
        with (self.store.batch([d for _, _, d in units if d], careful=careful) as status,
              self.store.group()):
            for fn, _, _ in units:
                try:
                    outcomes.append((True, fn()))
                except BaseException as e:  # refused: nothing of it is kept
                    outcomes.append((False, e))
        if status.committed:
            return outcomes
        if status.rerun and not careful:
            return None
        lost = StoreUnavailable("store unavailable: the commit failed")
        return [(False, lost) if ok else (ok, value) for ok, value in outcomes]


def _resolve(items: list[tuple[Any, bool, Any]]) -> None:
    """On the loop: set a batch's asyncio futures."""
    for fut, ok, value in items:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)


def _runs(batch: list[Any]) -> list[tuple[bool, list[Any]]]:
    """The batch cut into runs of reports (grouped) and of other units, in order."""
    runs: list[tuple[bool, list[Any]]] = []
    for item in batch:
        if runs and runs[-1][0] == item[2]:
            runs[-1][1].append(item)
        else:
            runs.append((item[2], [item]))
    return runs
