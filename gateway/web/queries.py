"""The dashboard's read-only SQL: paging, search and aggregates that the fleet views (which
return whole lists, for cc) do not offer. Kept in this one module so the storage split of
issue 14 has one place to port. Every query is bounded by LIMIT or is a GROUP BY over an
indexed column. Each takes the fleet's ``Repo`` (``fleet.store``): its helpers turn the
``?`` placeholders into PostgreSQL's, and every column is named, rows read by name."""

from __future__ import annotations

import re
from typing import Any

from proto.codes import result_name, state_name

from ..storage.repo import Repo, Row

MAX_PAGE = 200


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def counts(repo: Repo) -> dict[str, Any]:
    """For /metrics: jobs by state, campaigns by state, number of devices."""
    return {
        "jobs": {r["state"]: r["n"] for r in repo._all(
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")},
        "campaigns": {r["state"]: r["n"] for r in repo._all(
            "SELECT state, COUNT(*) AS n FROM campaigns GROUP BY state")},
        "devices": repo._scalar("SELECT COUNT(*) AS n FROM devices"),
    }


def overview(repo: Repo, seen_since: float) -> dict[str, Any]:
    """Devices by state, result, class and version (seq); how many were seen lately."""
    def group(col: str, name: Any = str) -> list[dict[str, Any]]:
        rows = repo._all(f"SELECT {col} AS k, COUNT(*) AS n FROM devices GROUP BY {col} "
                         "ORDER BY COUNT(*) DESC")
        return [{"key": name(r["k"]), "count": r["n"]} for r in rows]

    versions = repo._all("SELECT class, seq, COUNT(*) AS n FROM devices GROUP BY class, seq "
                         "ORDER BY class, seq")
    return {
        "devices": repo._scalar("SELECT COUNT(*) AS n FROM devices"),
        "seen_recently": repo._scalar("SELECT COUNT(*) AS n FROM devices WHERE last_seen >= ?",
                                      (seen_since,)),
        "by_state": group("state", state_name),
        "by_result": group("result", result_name),
        "by_class": group("class"),
        "by_version": [{"class": r["class"], "seq": r["seq"], "count": r["n"]}
                       for r in versions],
    }


def devices_page(repo: Repo, q: str, offset: int, limit: int) -> tuple[int, list[Row]]:
    """(matching total, one page ordered by id); ``q`` searches id, class, tags, address."""
    where, args = "", ()
    if q:
        where = ("WHERE id LIKE ? ESCAPE '\\' OR class LIKE ? ESCAPE '\\' "
                 "OR tags LIKE ? ESCAPE '\\' OR address LIKE ? ESCAPE '\\'")
        args = (_like(q),) * 4
    total = repo._scalar(f"SELECT COUNT(*) AS n FROM devices {where}", args)
    rows = repo._all(f"SELECT * FROM devices {where} ORDER BY id LIMIT ? OFFSET ?",
                     (*args, min(limit, MAX_PAGE), offset))
    return total, rows


def jobs_page(repo: Repo, campaign: int, state: str | None, offset: int,
              limit: int) -> tuple[int, list[Row]]:
    where, args = "WHERE campaign=?", (campaign,)
    if state:
        where, args = where + " AND state=?", (campaign, state)
    total = repo._scalar(f"SELECT COUNT(*) AS n FROM jobs {where}", args)
    rows = repo._all(f"SELECT * FROM jobs {where} ORDER BY id LIMIT ? OFFSET ?",
                     (*args, min(limit, MAX_PAGE), offset))
    return total, rows


def failure_reasons(repo: Repo, campaign: int) -> list[dict[str, Any]]:
    """Failed and timed-out jobs of a campaign grouped by state and result."""
    rows = repo._all("SELECT state, result, COUNT(*) AS n FROM jobs WHERE campaign=? AND state "
                     "IN ('failed', 'timed_out') GROUP BY state, result ORDER BY COUNT(*) DESC",
                     (campaign,))
    return [{"state": r["state"],
             "result": None if r["result"] is None else result_name(r["result"]),
             "count": r["n"]} for r in rows]


JOB_EDGE = re.compile(r"^job (\d+): (\w+) -> (\w+)")  # as written by Fleet._set_job and retry


def job_edges(repo: Repo, campaign: int,
              after_id: int = 0) -> list[tuple[int, float, int, str, str]]:
    """(event id, time, job id, from, to) of every job transition of a campaign after
    ``after_id``, oldest first. A retry reads "failed -> retried as job N" (to = "retried")."""
    out = []
    for r in repo._all(
            "SELECT id, time, detail FROM events WHERE campaign=? AND id>? AND kind IN "
            "('job', 'late report') ORDER BY id", (campaign, after_id)):
        m = JOB_EDGE.match(r["detail"])
        if m:
            out.append((r["id"], r["time"], int(m.group(1)), m.group(2), m.group(3)))
    return out


def image_devices(repo: Repo) -> dict[tuple[str, int], int]:
    """(class, seq) -> number of devices running that version."""
    return {(r["class"], r["seq"]): r["n"] for r in repo._all(
        "SELECT class, seq, COUNT(*) AS n FROM devices GROUP BY class, seq")}


def events_page(repo: Repo, before_id: int | None, limit: int,
                device: str | None = None) -> list[dict[str, Any]]:
    """The newest events (before ``before_id``), newest first."""
    if device is not None:
        return repo.device_events_page(device, before_id, min(limit, MAX_PAGE))
    where, args = "", []
    if before_id is not None:
        where, args = " WHERE id < ?", [before_id]
    return repo._all(f"SELECT * FROM events{where} ORDER BY id DESC LIMIT ?",
                     (*args, min(limit, MAX_PAGE)))
