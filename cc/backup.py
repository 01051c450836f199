"""``cc backup FILE``: an online, consistent copy of a gateway's data directory in one tar file.

Run it on the gateway host, as the gateway's user (the directory is 0700). The database is
copied with SQLite's online backup API (a consistent snapshot while the gateway keeps writing,
its WAL included; no ``sqlite3`` command needed), then the blob of every image in that snapshot
(blobs are content-addressed and never change), then the rest of the directory (OSCORE
credentials, tokens). Restore: stop the gateway, ``tar -xf FILE -C DATA`` into an empty
directory, start the gateway on it (docs/operations.md).
"""

from __future__ import annotations

import os
import sqlite3
import tarfile
import tempfile
from pathlib import Path

from .errors import CcError

DATABASE = "gateway.sqlite3"
#: never copied as files: the database (snapshotted instead), its WAL and shared memory, the
#: running gateway's lock, and partial uploads
SKIP = {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", "gateway.lock", "blobs"}


def backup(data: Path, out: Path) -> dict[str, int]:
    """Write the tar file ``out`` (0600: it holds device keys); returns what it holds."""
    db = data / DATABASE
    if not db.is_file():
        raise CcError(f"no gateway database in {data} (give the gateway's --data directory)")
    with tempfile.TemporaryDirectory(prefix="fota-backup-") as tmp:
        snapshot = Path(tmp) / DATABASE
        try:
            src = sqlite3.connect(db, timeout=10)
            try:
                src.execute("PRAGMA query_only=1")
                dst = sqlite3.connect(snapshot)
                with dst:
                    src.backup(dst)
                # every blob a device may be sent: images and their variants (deflated, deltas)
                digests = [r[0] for r in dst.execute(
                    "SELECT digest FROM images UNION SELECT sent FROM variants")]
                dst.close()
            finally:
                src.close()
        except sqlite3.Error as e:
            raise CcError(f"cannot copy the database {db}: {e}") from None
        part = out.with_name(out.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
                tar.add(snapshot, DATABASE)
                for d in sorted(set(digests)):
                    blob = data / "blobs" / d
                    if not blob.is_file():
                        raise CcError(f"blob {d[:8]} vanished during the backup "
                                      "(removed meanwhile?): run the backup again")
                    tar.add(blob, f"blobs/{d}")
                others = 0
                for path in sorted(data.iterdir()):
                    if path.name not in SKIP:
                        tar.add(path, path.name)  # recursive for directories
                        others += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, out)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    return {"blobs": len(set(digests)), "others": others, "bytes": out.stat().st_size}
