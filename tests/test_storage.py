"""The storage interface's behaviour, the same suite on SQLite and on PostgreSQL: migrations,
group commit, a failing unit rolled back alone, answers only after commit, report keys."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import psycopg
import pytest

from gateway.storage import MIGRATIONS, Repo, SchemaTooNew, open_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    return request.getfixturevalue("pg_url")


def set_schema_version(url: str, n: int) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            db.execute(f"PRAGMA user_version={n}")
    else:
        with psycopg.connect(url) as db:
            db.execute("UPDATE fota_schema SET version=%s", (n,))


def add_device(repo: Repo, device_id: str) -> None:
    repo._exec("INSERT INTO devices(id, class) VALUES (?,?)", (device_id, "c"))


def blocked(engine):
    """Hold the writer in a unit until the returned event is set: what is submitted meanwhile
    forms one batch."""
    go, running = threading.Event(), threading.Event()

    def hold(repo):
        running.set()
        assert go.wait(10)

    first = engine.submit(hold)
    assert running.wait(10)
    return go, first


def test_migrations_run_once_and_a_newer_schema_is_refused(url):
    e = open_engine(url)
    e.write_sync(lambda r: r.event("test", "one"))
    e.close()
    e = open_engine(url)  # reopening runs no migration twice and keeps the data
    assert [ev["detail"] for ev in e.read_sync(lambda r: r.events_since(0, 10))] == ["one"]
    e.close()
    set_schema_version(url, len(MIGRATIONS) + 1)
    with pytest.raises(SchemaTooNew, match="newer than this gateway"):
        open_engine(url)


async def test_group_commit_one_transaction_for_many_units(url):
    logged = []
    e = open_engine(url, on_event=logged.append)
    try:
        go, first = blocked(e)
        writes = [asyncio.ensure_future(e.write(lambda r, k=k: r.event("report", str(k))["id"]))
                  for k in range(100)]
        await asyncio.sleep(0)  # every write is queued behind the held unit
        go.set()
        ids = await asyncio.gather(*writes)
        first.result(10)
        assert e.stats.units == 101 and e.stats.commits == 2
        assert len(set(ids)) == 100
        assert [ev["detail"] for ev in logged] == [str(k) for k in range(100)]
        # answered after the commit: another connection sees every row
        other = open_engine(url)
        assert len(other.read_sync(lambda r: r.events_since(0, 1000))) == 100
        other.close()
    finally:
        e.close()


async def test_a_failing_unit_is_rolled_back_alone(url):
    logged = []
    e = open_engine(url, on_event=logged.append)
    try:
        def bad(r):
            r.event("test", "lost")
            raise ValueError("refused")

        go, _ = blocked(e)
        a = asyncio.ensure_future(e.write(lambda r: r.event("test", "a")))
        b = asyncio.ensure_future(e.write(bad))
        c = asyncio.ensure_future(e.write(lambda r: r.event("test", "c")))
        await asyncio.sleep(0)
        go.set()
        await a
        with pytest.raises(ValueError, match="refused"):
            await b
        await c
        assert e.stats.commits == 2  # a, b and c shared one
        details = [ev["detail"] for ev in await e.read(lambda r: r.events_since(0, 10))]
        assert details == ["a", "c"] and [ev["detail"] for ev in logged] == ["a", "c"]
    finally:
        e.close()


async def test_a_read_cannot_write(url):
    e = open_engine(url)
    try:
        await e.write(lambda r: add_device(r, "d1"))
        with pytest.raises(Exception, match="(?i)read-only|readonly"):
            await e.read(lambda r: r.set_device_key("d1", b"k" * 32))
        assert (await e.read(lambda r: r.device_key("d1")))["key"] is None
    finally:
        e.close()


async def test_report_keys_and_counters(url):
    e = open_engine(url)
    try:
        key = bytes(range(32))
        await e.write(lambda r: (add_device(r, "d1"), r.set_device_key("d1", key)))
        assert await e.read(lambda r: r.device_key("d1")) == {"key": key, "counter": 0}
        top = 2**63 - 1
        for counter in (5, 3, top, 7):  # only ever goes up, up to the largest signed 64 bits
            await e.write(lambda r, c=counter: r.raise_counter("d1", c))
        assert (await e.read(lambda r: r.device_key("d1")))["counter"] == top
        await e.write(lambda r: r.set_device_key("d1", key[::-1]))  # a new key starts over
        assert await e.read(lambda r: r.device_key("d1")) == {"key": key[::-1], "counter": 0}
        assert await e.read(lambda r: r.device_key("nobody")) is None
    finally:
        e.close()


def test_times_keep_their_precision(url):
    t = 1_790_000_000.123456
    e = open_engine(url, clock=lambda: t)
    try:
        e.write_sync(lambda r: r.event("test", "x"))
        assert e.read_sync(lambda r: r.events_since(t, 1))[0]["time"] == t
    finally:
        e.close()


def test_store_batch_group_commit(url):
    """The gateway's synchronous store: transactions inside batch() share one commit, a
    failing one is rolled back alone, answers wait for the commit."""
    from gateway.store import Store

    logged, answered = [], []
    s = Store(url, on_event=logged.append)
    try:
        before = s.commits
        with s.batch():
            with s.group():
                with s.transaction():
                    s.event("test", "a")
            s.after_commit(lambda ok: answered.append(("a", ok, len(logged))))
            with pytest.raises(ValueError), s.group():
                with s.transaction():
                    s.event("test", "lost")
                    raise ValueError("refused")
            with s.group():
                s.event("test", "c")
            s.after_commit(lambda ok: answered.append(("c", ok, len(logged))))
            assert answered == [] and logged == []  # nothing is answered before the commit
        assert s.commits == before + 1
        with s.batch():  # a transaction outside group() commits the batch first
            with s.group():
                s.event("test", "d")
            s.after_commit(lambda ok: answered.append(("d", ok, len(logged))))
            s.event("test", "e")
            assert answered[-1] == ("d", True, 3) and len(logged) == 4
        assert s.commits == before + 3
        assert answered[:2] == [("a", True, 2), ("c", True, 2)]  # after the events were announced
        assert [e["detail"] for e in s.events_since(0, 10)] == ["a", "c", "d", "e"]
        s.after_commit(lambda ok: answered.append(("now", ok, 0)))  # outside a batch: at once
        assert answered[-1] == ("now", True, 0)
    finally:
        s.close()
