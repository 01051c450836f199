"""The dashboard's read-only SQL: paging, search and aggregates that the fleet views (which
return whole lists, for cc) do not offer. Kept in this one module so the storage split of
issue 14 has one place to port. Every query is bounded by LIMIT or is a GROUP BY over an
indexed column."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from proto.codes import result_name, state_name

MAX_PAGE = 200


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def counts(db: sqlite3.Connection) -> dict[str, Any]:
    """For /metrics: jobs by state, campaigns by state, number of devices."""
    return {
        "jobs": dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()),
        "campaigns": dict(db.execute(
            "SELECT state, COUNT(*) FROM campaigns GROUP BY state").fetchall()),
        "devices": db.execute("SELECT COUNT(*) FROM devices").fetchone()[0],
    }


def overview(db: sqlite3.Connection, seen_since: float) -> dict[str, Any]:
    """Devices by state, result, class and version (seq); how many were seen lately."""
    def group(col: str, name: Any = str) -> list[dict[str, Any]]:
        rows = db.execute(f"SELECT {col}, COUNT(*) FROM devices GROUP BY {col} "
                          "ORDER BY COUNT(*) DESC").fetchall()
        return [{"key": name(r[0]), "count": r[1]} for r in rows]

    versions = db.execute("SELECT class, seq, COUNT(*) FROM devices GROUP BY class, seq "
                          "ORDER BY class, seq").fetchall()
    return {
        "devices": db.execute("SELECT COUNT(*) FROM devices").fetchone()[0],
        "seen_recently": db.execute("SELECT COUNT(*) FROM devices WHERE last_seen >= ?",
                                    (seen_since,)).fetchone()[0],
        "by_state": group("state", state_name),
        "by_result": group("result", result_name),
        "by_class": group("class"),
        "by_version": [{"class": r[0], "seq": r[1], "count": r[2]} for r in versions],
    }


def devices_page(db: sqlite3.Connection, q: str, offset: int,
                 limit: int) -> tuple[int, list[sqlite3.Row]]:
    """(matching total, one page ordered by id); ``q`` searches id, class, tags, address."""
    where, args = "", ()
    if q:
        where = ("WHERE id LIKE ? ESCAPE '\\' OR class LIKE ? ESCAPE '\\' "
                 "OR tags LIKE ? ESCAPE '\\' OR address LIKE ? ESCAPE '\\'")
        args = (_like(q),) * 4
    total = db.execute(f"SELECT COUNT(*) FROM devices {where}", args).fetchone()[0]
    rows = db.execute(f"SELECT * FROM devices {where} ORDER BY id LIMIT ? OFFSET ?",
                      (*args, min(limit, MAX_PAGE), offset)).fetchall()
    return total, rows


def jobs_page(db: sqlite3.Connection, campaign: int, state: str | None, offset: int,
              limit: int) -> tuple[int, list[sqlite3.Row]]:
    where, args = "WHERE campaign=?", (campaign,)
    if state:
        where, args = where + " AND state=?", (campaign, state)
    total = db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
    rows = db.execute(f"SELECT * FROM jobs {where} ORDER BY id LIMIT ? OFFSET ?",
                      (*args, min(limit, MAX_PAGE), offset)).fetchall()
    return total, rows


def failure_reasons(db: sqlite3.Connection, campaign: int) -> list[dict[str, Any]]:
    """Failed and timed-out jobs of a campaign grouped by state and result."""
    rows = db.execute("SELECT state, result, COUNT(*) FROM jobs WHERE campaign=? AND state IN "
                      "('failed', 'timed_out') GROUP BY state, result ORDER BY COUNT(*) DESC",
                      (campaign,)).fetchall()
    return [{"state": r[0], "result": None if r[1] is None else result_name(r[1]),
             "count": r[2]} for r in rows]


JOB_EDGE = re.compile(r"^job (\d+): (\w+) -> (\w+)")  # as written by Fleet._set_job and retry


def job_edges(db: sqlite3.Connection, campaign: int,
              after_id: int = 0) -> list[tuple[int, float, int, str, str]]:
    """(event id, time, job id, from, to) of every job transition of a campaign after
    ``after_id``, oldest first. A retry reads "failed -> retried as job N" (to = "retried")."""
    out = []
    for eid, t, detail in db.execute(
            "SELECT id, time, detail FROM events WHERE campaign=? AND id>? AND kind IN "
            "('job', 'late report') ORDER BY id", (campaign, after_id)):
        m = JOB_EDGE.match(detail)
        if m:
            out.append((eid, t, int(m.group(1)), m.group(2), m.group(3)))
    return out


def image_devices(db: sqlite3.Connection) -> dict[tuple[str, int], int]:
    """(class, seq) -> number of devices running that version."""
    return {(r[0], r[1]): r[2] for r in db.execute(
        "SELECT class, seq, COUNT(*) FROM devices GROUP BY class, seq")}


def events_page(db: sqlite3.Connection, before_id: int | None, limit: int,
                device: str | None = None) -> list[dict[str, Any]]:
    """The newest events (before ``before_id``), newest first."""
    where, args = [], []
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    if device is not None:
        where.append("device = ?")
        args.append(device)
    sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
    rows = db.execute(sql + " ORDER BY id DESC LIMIT ?",
                      (*args, min(limit, MAX_PAGE))).fetchall()
    return [dict(r) for r in rows]
