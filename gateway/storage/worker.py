"""The gateway's store on its own thread: no database call runs on the event loop.

Every operation that touches the database (a ``Fleet`` method, a view, the sweeper) is handed
to ``StoreWorker.call`` as a plain synchronous function; the one thread that owns the store's
connection runs it and the awaiting handler resumes with its result. ``Fleet`` stays
synchronous (tested in-process with a fake clock); only this boundary is async.

Group commit: the thread takes every unit waiting (up to ``max_batch``) and runs them inside
one ``Store.batch()``. A ``grouped`` unit (a device report) runs in ``Store.group()``: its
transaction is a savepoint of the batch's transaction (one that raises is rolled back alone)
and its result is handed back only after the batch committed (``after_commit``), so a report
is still answered only once it is durable, and a burst of reports costs one commit (one
fsync). Any other unit commits on its own (the batch so far first), as before. Batches form by
themselves under load: reports queue while the previous commit is on disk.

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


log = logging.getLogger("fota.gateway")
T = TypeVar("T")
DEFAULT_MAX_BATCH = 256  # units per commit at most
DEFAULT_MAX_PENDING = 4096  # units waiting for the thread at most (``full`` beyond)
_STOP = object()


class StoreUnavailable(Exception):
    """The transaction could not commit (disk full, database gone): nothing of it is kept."""


class Batching(Protocol):
    """What ``gateway.store.Store`` offers for group commit."""

    def batch(self) -> Any: ...
    def group(self) -> Any: ...
    def after_commit(self, answer: Callable[[bool], None]) -> None: ...
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
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="fota-store", daemon=True)
        self._thread.start()
        store.bind_thread(self._thread.ident)  # from now on only this thread uses it

    def full(self) -> bool:
        """True when ``max_pending`` units wait: the caller sheds load (5.03) instead."""
        return self.pending >= self.max_pending

    def submit(self, fn: Callable[[], T], grouped: bool = False) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            self.pending += 1
        self._q.put((fn, fut, grouped))
        return fut

    async def call(self, fn: Callable[[], T], *, grouped: bool = False) -> T:
        """Run ``fn`` on the store's thread; ``grouped``: share the next commit (reports)."""
        return await asyncio.wrap_future(self.submit(fn, grouped))

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
            with self.store.batch():
                for fn, fut, grouped in batch:
                    self._unit(fn, fut, grouped)
            with self._lock:
                self.pending -= len(batch)

    def _unit(self, fn: Callable[[], Any], fut: Future[Any], grouped: bool) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        self.units += 1
        try:
            if grouped:
                with self.store.group():
                    value = fn()
            else:
                value = fn()
        except BaseException as e:  # refused or failed: rolled back (its savepoint or its own)
            fut.set_exception(e)
            return

        def answer(durable: bool) -> None:
            if durable:
                fut.set_result(value)
            else:
                fut.set_exception(StoreUnavailable("store unavailable: the commit failed"))

        self.store.after_commit(answer)
