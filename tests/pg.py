"""A throwaway PostgreSQL cluster for tests (the Debian packages' initdb and pg_ctl).

One cluster per test session (``pg_cluster`` fixture, started on first use, ~2 s), a fresh
database per test (``pg_url``). The cluster lives in a temp dir, listens on a Unix socket in
that dir only (no TCP), and runs as an unprivileged user: ``postgres`` refuses to run as root,
so under root (CI) every command goes through ``runuser -u postgres``. ``fsync=off``: a test
kills gateways, never the database host; benchmarks run with PostgreSQL's defaults.

    cluster = PgCluster(tmp).start()   # PgCluster.url("db") -> "postgresql://..."
    cluster.create_database("t1"); cluster.stop()
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SUPERUSER = "fota"


def pg_bin(name: str) -> str:
    """The newest installed server version's program (Debian keeps them per version)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run scripts/setup")
    return found[-1]


class PgCluster:
    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = Path(root)
        self.data = self.root / "data"
        self.socket_dir = self.root  # Unix socket: .s.PGSQL.<port> in here
        self.port = 5432  # a Unix socket in a private dir: no clash with another cluster
        self.fsync = fsync
        self._as_user: list[str] = (["runuser", "-u", "postgres", "--"]
                                    if os.geteuid() == 0 else [])
        self._names = itertools.count(1)

    def _run(self, *cmd: str, timeout: float = 60) -> None:
        p = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({p.returncode}): "
                               f"{(p.stderr or p.stdout).strip()[-800:]}")

    def start(self) -> "PgCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        opts = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses='' "
                f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200")
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.root / "server.log"), "-w", "-t", "30", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                      "-t", "30", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{db}?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = name or f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster():
    root = Path(tempfile.mkdtemp(prefix="fota-pg-"))
    cluster = PgCluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh database in the session's cluster."""
    return pg_cluster.create_database()
