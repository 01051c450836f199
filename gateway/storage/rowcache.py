"""The device rows reports read, kept between a SQLite gateway's fast batches of reports.

A fast batch reads its devices' rows (``Repo.devices_for_reports``: what a report reads of its
device and its active job) as it begins: 2.4 us a device on SQLite, the largest share of
the engine's work for a report. Most reports come from devices whose row only the reports
themselves changed since the last batch, so the rows the last batches wrote are kept here
and the batch reads only the others. Correct because:

- what a fast batch's reports write to a row is applied to the kept row only once the batch
  committed (``stage``, ``committed``); a row a batch takes is out of here until then, so a
  unit that failed, a refused report or a rolled-back batch leaves nothing stale (the next
  batch reads the database);
- any other write (a job, a key, an enrolment, a careful batch; ``Store._exec``) makes the
  whole cache ``stale``: it is emptied when that transaction ends;
- another connection's commit (a second process on the file, an administrator) changes
  SQLite's ``PRAGMA data_version``, read as each fast batch begins (``check``): the cache is
  emptied then.

Bounded: at most ``max_rows`` rows (the least recently reported go first) and nothing older
than ``max_age`` seconds (emptied whole). PostgreSQL keeps none (other gateways write the same
rows; its batch locks them as it reads them anyway).
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]
DEFAULT_MAX_ROWS = 20_000  # ~0.6 KB a row
DEFAULT_MAX_AGE = 300.0  # seconds


class RowCache:
    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS, max_age: float = DEFAULT_MAX_AGE) -> None:
        self.max_rows = max_rows
        self.max_age = max_age
        self.rows: dict[str, Row] = {}  # device id -> row, least recently reported first
        self.stale = False  # a write it cannot follow: empty it when the transaction ends
        self._staged: list[tuple[Any, ...]] = []  # (row, class, seq, state, result, address)
        self._version: Any = None
        self._born = 0.0

    def check(self, version: Any, now: float) -> None:
        """As a fast batch begins: empty it if another connection committed since (``version``
        changed) or it is older than ``max_age``."""
        if version != self._version or now - self._born > self.max_age:
            self.rows.clear()
            self._version, self._born = version, now

    def take(self, ids: list[str]) -> tuple[dict[str, Row], list[str]]:
        """The rows kept of ``ids`` (out of the cache until ``committed``), and the ids to read."""
        rows, found, missing = self.rows, {}, []
        for i in ids:
            row = rows.pop(i, None)
            if row is None:
                missing.append(i)
            else:
                found[i] = row
        return found, missing

    def stage(self, row: Row, cls: str, seq: int, state: int, result: int,
              address: str) -> None:
        """A report of the batch wrote these to ``row``'s device (kept if the batch commits)."""
        self._staged.append((row, cls, seq, state, result, address))

    def committed(self) -> None:
        """The transaction committed: keep the rows its reports wrote, or nothing if stale."""
        staged, self._staged = self._staged, []
        if self.stale:
            self.clear()
            return
        rows = self.rows
        for row, row["class"], row["seq"], row["state"], row["result"], row["address"] in staged:
            rows[row["id"]] = row  # (the loop's targets wrote the report's values into it)
        while len(rows) > self.max_rows:
            del rows[next(iter(rows))]

    def clear(self) -> None:
        """Forget every row (a rollback, a write it cannot follow)."""
        self.rows.clear()
        self._staged.clear()
        self.stale = False
