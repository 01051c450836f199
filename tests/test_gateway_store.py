"""The store's durability settings and schema versioning, and blob file safety."""

from __future__ import annotations

import hashlib
import os

import pytest

from gateway.blobs import BlobStore, CorruptBlob
from gateway.store import MIGRATIONS, Store


def test_wal_full_sync_and_schema_version(tmp_path):
    s = Store(tmp_path / "db")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    s.event("test", "one")
    s.close()
    s = Store(tmp_path / "db")  # reopening runs no migration twice and keeps the data
    assert [e["detail"] for e in s.events_since(0, 10)] == ["one"]
    s.db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    s.close()
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        Store(tmp_path / "db")


def test_a_failed_transaction_leaves_no_trace(tmp_path):
    logged = []
    s = Store(tmp_path / "db", on_event=logged.append)
    with pytest.raises(ZeroDivisionError):
        with s.transaction():
            s.event("test", "lost")
            1 / 0
    assert s.events_since(0, 10) == [] and logged == []
    s.event("test", "kept")
    assert [e["detail"] for e in logged] == ["kept"]


def test_blob_names_cannot_escape(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    for bad in ("../" + "0" * 61, "0" * 63, "0" * 65, "G" * 64, "/etc/passwd", ""):
        with pytest.raises(ValueError):
            blobs.path(bad)


def test_blob_written_atomically_and_verified(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    data = os.urandom(3000)
    name = hashlib.sha256(data).hexdigest()
    temp, fd = blobs.new_temp(name)
    os.write(fd, data)
    assert not blobs.exists(name)  # invisible until committed
    blobs.commit_temp(temp, fd, name)
    fd, size = blobs.opened(name)
    assert size == 3000 and os.pread(fd, 10, 5) == data[5:15]
    other = hashlib.sha256(b"x").hexdigest()
    (tmp_path / "blobs" / other).write_bytes(b"not x")
    with pytest.raises(CorruptBlob):
        blobs.opened(other)
    (tmp_path / "blobs" / "tmp" / "leftover").write_bytes(b"partial upload")
    BlobStore(tmp_path / "blobs")  # a restart clears interrupted uploads
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
