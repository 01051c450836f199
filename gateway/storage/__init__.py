"""The gateway's durable state behind one interface, on SQLite or PostgreSQL.

``backend_for(url)`` picks the engine from a store URL: ``sqlite:///path`` (the default, a file
under ``--data``) or ``postgresql://…`` (several gateways on one database). All SQL is in
``repo.py``; ``gateway/store.py`` runs it in transactions and group commits; ``worker.py``
gives it a thread of its own so the event loop never waits on it; ``schema.py`` holds the
migrations of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .repo import Repo, Row
from .schema import MIGRATIONS, SchemaTooNew
from .worker import StoreUnavailable

__all__ = ["SQLITE_FILE", "BadStoreUrl", "MIGRATIONS", "Repo", "Row", "SchemaTooNew",
           "StoreUnavailable", "backend_for", "default_url"]


#: The SQLite file under ``--data`` (the default store).
SQLITE_FILE = "gateway.sqlite3"


class BadStoreUrl(ValueError):
    pass


def default_url(data: Path) -> str:
    return f"sqlite:///{Path(data).resolve() / SQLITE_FILE}"


def backend_for(url: str) -> Any:
    """The backend a store URL names; BadStoreUrl with a one-line reason otherwise."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteBackend

        path = url[len("sqlite:///"):]  # sqlite:///relative/file, sqlite:////absolute/file
        if not path:
            raise BadStoreUrl("sqlite:/// needs a file path (sqlite:////var/lib/fota/x.sqlite3)")
        return SqliteBackend(Path(path))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresBackend

        return PostgresBackend(url)
    raise BadStoreUrl(f"store URL must start with sqlite:/// or postgresql://, got {url[:40]!r}")

