"""Copy a gateway's state from one store to another (``fota-gateway migrate``).

The usual move is SQLite -> PostgreSQL when a fleet outgrows one machine; the copy works either
way. Both stores are brought to the current schema first; the target must be empty. Rows keep
their ids (jobs are named by id on devices in the field), in foreign-key order, in one
transaction on the target: a failed copy leaves it empty. The source is read in one snapshot;
stop the gateways that write it first, or what they write afterwards is not copied.
Firmware blobs (files under ``DATA/blobs``) go into the target's ``blobs`` table when the
target is PostgreSQL, where every gateway sharing it finds them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .repo import TABLES, Repo


class MigrateError(Exception):
    pass


def copy(src: Any, dst: Any, *, batch: int = 2000, blobs: Path | None = None,
         progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table from backend ``src`` to backend ``dst``, and the blob files under
    ``blobs`` into a PostgreSQL target; returns rows per table (and "blob files")."""
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
        while target.file_events():  # the copied events, by device
            pass
        if blobs is not None and dst.dialect == "postgresql":
            copied["blob files"] = _copy_blobs(blobs, target)
        dst.commit(ddb)
        return copied
    except BaseException:
        dst.rollback(ddb)
        raise
    finally:
        src.rollback(sdb)
        sdb.close()
        ddb.close()


def _copy_blobs(root: Path, target: Repo) -> int:
    n = 0
    for f in sorted(root.glob("[0-9a-f]" * 64)):
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != f.name:
            raise MigrateError(f"blob {f.name[:16]}… does not hash to its name: not copied "
                               "(restore it, or remove its image, first)")
        target.put_blob(f.name, data)
        n += 1
    return n
