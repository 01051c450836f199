"""Copy a gateway's state from one store to another (``fota-gateway migrate``).

The usual move is SQLite -> PostgreSQL when a fleet outgrows one machine; the copy works either
way. Both stores are brought to the current schema first; the target must be empty. Rows keep
their ids (jobs are named by id on devices in the field), in foreign-key order, in one
transaction on the target: a failed copy leaves it empty. The source is read in one snapshot;
stop the gateways that write it first, or what they write afterwards is not copied.
Blobs are files under ``--data``, not in the store: copy the directory as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .repo import TABLES, Repo


class MigrateError(Exception):
    pass


def copy(src: Any, dst: Any, *, batch: int = 2000,
         progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table from backend ``src`` to backend ``dst``; returns rows per table."""
    sdb, ddb = src.connect(), dst.connect()
    try:
        src.migrate(sdb)
        dst.migrate(ddb)
        source, target = Repo(sdb, src.dialect), Repo(ddb, dst.dialect)
        dst.begin(ddb)
        busy = {t: n for t in TABLES if (n := target.count_rows(t))}
        if busy:
            raise MigrateError("the target store is not empty ("
                               + ", ".join(f"{n} {t}" for t, n in busy.items()) + ")")
        src.begin_read(sdb)
        copied = {}
        for table in TABLES:
            n = 0
            for rows in source.table_rows(table, batch):
                target.insert_rows(table, rows)
                n += len(rows)
                if progress is not None:
                    progress(table, n)
            target.restart_ids(table)
            copied[table] = n
        dst.commit(ddb)
        return copied
    except BaseException:
        dst.rollback(ddb)
        raise
    finally:
        src.rollback(sdb)
        sdb.close()
        ddb.close()
