"""The storage interface's behaviour, the same suite on SQLite and on PostgreSQL: migrations,
group commit on the store's thread (``StoreWorker``), a failing unit rolled back alone, a
database error in a pipelined batch (PostgreSQL) failing the batch, answers only after commit,
report keys."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import cbor2
import psycopg
import pytest

from gateway import devauth, metrics
from gateway.blobs import BlobStore
from gateway.devauth import DeviceAuth
from gateway.fleet import Fleet
from gateway.requests import Refused, parse_report
from gateway.storage import MIGRATIONS, Repo, SchemaTooNew
from gateway.storage.rowcache import RowCache
from gateway.storage.worker import StoreWorker
from gateway.store import Store
from proto.keys import ReportKey


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


def held(worker: StoreWorker):
    """Hold the store's thread in a unit until the returned event is set: what is submitted
    meanwhile forms one batch."""
    go, running = threading.Event(), threading.Event()

    def hold():
        running.set()
        assert go.wait(10)

    first = worker.submit(hold)
    assert running.wait(10)
    return go, first


def careful_batches() -> float:
    return metrics.REGISTRY.get_sample_value("fota_store_batches_total", {"how": "careful"}) or 0


def details(store: Store) -> list[str]:
    return [ev["detail"] for ev in store.events_since(0, 1000)]


def test_migrations_run_once_and_a_newer_schema_is_refused(url):
    s = Store(url)
    s.event("test", "one")
    s.close()
    s = Store(url)  # reopening runs no migration twice and keeps the data
    assert details(s) == ["one"]
    s.close()
    set_schema_version(url, len(MIGRATIONS) + 1)
    with pytest.raises(SchemaTooNew, match="newer than this gateway"):
        Store(url)


async def test_group_commit_one_transaction_for_many_units(url):
    logged = []
    s = Store(url, on_event=logged.append)
    w = StoreWorker(s)
    try:
        before = s.commits
        go, first = held(w)

        def unit(k):
            with s.transaction():
                return s.event("report", str(k))

        calls = [asyncio.ensure_future(w.call(lambda k=k: unit(k), grouped=True))
                 for k in range(100)]
        await asyncio.sleep(0)  # every unit is queued behind the held one
        go.set()
        events = await asyncio.gather(*calls)
        first.result(10)
        assert s.commits == before + 1 and w.batches == 2 and w.units == 101
        assert len({ev["id"] for ev in events}) == 100  # ids read once the batch committed
        assert [ev["detail"] for ev in logged] == [str(k) for k in range(100)]
        # answered after the commit: another connection sees every row
        other = Store(url)
        assert len(details(other)) == 100
        other.close()
    finally:
        w.close()
        s.close()


async def test_a_failing_unit_is_rolled_back_alone(url):
    logged = []
    s = Store(url, on_event=logged.append)
    w = StoreWorker(s)
    try:
        def event(text):
            with s.transaction():
                s.event("test", text)

        def bad():
            with s.transaction():
                s.event("test", "lost")
                raise ValueError("refused")

        before = s.commits
        careful = careful_batches()
        go, _ = held(w)
        a = asyncio.ensure_future(w.call(lambda: event("a"), grouped=True))
        b = asyncio.ensure_future(w.call(bad, grouped=True))
        c = asyncio.ensure_future(w.call(lambda: event("c"), grouped=True))
        await asyncio.sleep(0)
        go.set()
        await a
        with pytest.raises(ValueError, match="refused"):
            await b
        await c
        assert s.commits == before + 1  # a and c shared one
        assert w.reruns == 1  # b wrote before it raised: the fast run went back, carefully
        assert careful_batches() == careful + 1
        assert await w.call(lambda: details(s)) == ["a", "c"]
        assert [ev["detail"] for ev in logged] == ["a", "c"]
    finally:
        w.close()
        s.close()


async def test_a_database_error_in_a_batch(url):
    """The unit whose statement the database refuses fails alone; the others commit: the fast
    run (on PostgreSQL pipelined: the error surfaces only at a sync) is rolled back and run
    again carefully, a savepoint per unit."""
    s = Store(url)
    w = StoreWorker(s)
    try:
        def event(text):
            with s.transaction():
                s.event("test", text)

        def duplicate():
            with s.transaction():
                add_device(s, "twice")
                add_device(s, "twice")

        go, _ = held(w)
        calls = [asyncio.ensure_future(w.call(f, grouped=True))
                 for f in (lambda: event("a"), duplicate, lambda: event("c"))]
        await asyncio.sleep(0)
        go.set()
        outcomes = [type(r).__name__ if isinstance(r, Exception) else "ok"
                    for r in await asyncio.gather(*calls, return_exceptions=True)]
        kept = await w.call(lambda: details(s))
        assert (outcomes, kept, w.reruns) == ({
            "sqlite": ["ok", "IntegrityError", "ok"],
            "postgresql": ["ok", "UniqueViolation", "ok"]}[s.dialect], ["a", "c"], 1)
        await w.call(lambda: event("after"), grouped=True)
        assert await w.call(lambda: details(s)) == kept + ["after"]
    finally:
        w.close()
        s.close()


async def test_reports_of_one_device_in_one_batch(url, tmp_path):
    """A device reporting several times within one batch (new at the first): it is
    registered once, each change is one event, a replayed MAC counter is refused, as if the
    reports had been committed one by one (the fast run reads the batch's devices once and
    follows its own writes); each event is announced with the id the database gave it."""
    announced: list[dict] = []
    s = Store(url, on_event=announced.append)
    fleet, auth = Fleet(s, BlobStore(tmp_path / "blobs")), DeviceAuth(s)
    fleet.enrol({"id": "keyed", "class": "c"})
    key = auth.provision("keyed")
    w = StoreWorker(s)
    try:
        def report(device, state, counter=None, key=None):
            m = {ReportKey.ID: device, ReportKey.CLASS: "c", ReportKey.SEQ: 1,
                 ReportKey.STATE: state, ReportKey.RESULT: 0}
            if key is not None:
                m[ReportKey.AUTH] = [counter, devauth.mac(key, devauth.REPORT_LABEL, counter,
                                                          devauth.body_of(m, ReportKey.AUTH))]
            return lambda: (auth.check_report(m), fleet.report(parse_report(cbor2.dumps(
                {k: v for k, v in m.items() if k != ReportKey.AUTH})), "127.0.0.1:1"))

        before = s.commits
        go, _ = held(w)
        units = [("new", report("new", 0)), ("new", report("new", 1)), ("new", report("new", 1)),
                 ("new", report("new", 2)), ("keyed", report("keyed", 1, 5, key)),
                 ("keyed", report("keyed", 2, 5, key)), ("keyed", report("keyed", 2, 6, key))]
        calls = [asyncio.ensure_future(w.call(f, grouped=True, device=d)) for d, f in units]
        await asyncio.sleep(0)
        go.set()
        got = await asyncio.gather(*calls, return_exceptions=True)
        assert [str(g) if isinstance(g, Exception) else "ok" for g in got] == \
            ["ok"] * 5 + ["replayed report: counter 5 is not above 5", "ok"]
        assert s.commits == before + 1 and w.reruns == 0  # one fast batch
        history = [(ev["device"], ev["kind"], ev["detail"].split(",")[0])
                   for ev in await w.call(lambda: s.events_since(0, 100))
                   if ev["kind"] in ("registered", "state")]
        assert history == [("new", "registered", "class c"),
                           ("new", "state", "idle/initial -> downloading/initial"),
                           ("new", "state", "downloading/initial -> downloaded/initial"),
                           ("keyed", "state", "idle/initial -> downloading/initial"),
                           ("keyed", "state", "downloading/initial -> downloaded/initial")]
        assert (await w.call(lambda: s.device_key("keyed")))["counter"] == 6
        stored = await w.call(lambda: s.events_since(0, 100))
        assert [(ev["id"], ev["detail"]) for ev in announced] == \
            [(ev["id"], ev["detail"]) for ev in stored]
    finally:
        w.close()
        s.close()


async def test_a_big_fast_batch_writes_every_row(url, tmp_path):
    """A fast batch sends its device updates and events as a few statements of many rows
    (SQLite: sizes 256, 32, 8, 4 ... for 300 rows; PostgreSQL: executemany): every device gets
    its own values, every event its place in the log, announced with its id."""
    announced: list[dict] = []
    s = Store(url, on_event=announced.append)
    fleet = Fleet(s, BlobStore(tmp_path / "blobs"))
    w = StoreWorker(s, max_batch=400)
    n = 300
    try:
        def report(k, cls, state):
            r = parse_report(cbor2.dumps({ReportKey.ID: f"d{k:03}", ReportKey.CLASS: cls,
                                          ReportKey.SEQ: k, ReportKey.STATE: state,
                                          ReportKey.RESULT: 0}))
            return lambda: fleet.report(r, f"127.0.0.{k % 200}:{k}")

        await asyncio.gather(*(w.call(report(k, "c0", 0), grouped=True, device=f"d{k:03}")
                               for k in range(n)))
        before, first = s.commits, len(announced)
        go, _ = held(w)
        calls = [asyncio.ensure_future(w.call(report(k, f"c{k % 3}", 1 + k % 2), grouped=True,
                                              device=f"d{k:03}")) for k in range(n)]
        await asyncio.sleep(0)
        go.set()
        await asyncio.gather(*calls)
        assert s.commits == before + 1 and w.reruns == 0  # one fast batch
        devices = await w.call(s.devices)
        assert [(d["id"], d["class"], d["state"]) for d in devices] == \
            [(f"d{k:03}", f"c{k % 3}", 1 + k % 2) for k in range(n)]
        stored = await w.call(lambda: s.events_since(0, 10_000))
        assert [(ev["id"], ev["device"], ev["detail"]) for ev in announced] == \
            [(ev["id"], ev["device"], ev["detail"]) for ev in stored]
        new = [(ev["device"], ev["kind"]) for ev in announced[first:]]
        assert new == [(f"d{k:03}", kind) for k in range(n)
                       for kind in (("class",) if k % 3 else ()) + ("state",)]
    finally:
        w.close()
        s.close()


async def test_a_report_reads_what_changed_since_the_last_batch(url, tmp_path):
    """The rows a SQLite gateway keeps between batches of reports (storage/rowcache.py) hide
    no change: another connection's commit (a class changed behind the gateway), the gateway's
    own other writes (a key provisioned: the next report must carry its MAC), a counter raised
    by a unit whose batch did not read the device (a replay of it is still refused); on both
    engines. Each report of d1 shares its batch with one of d0 before it (the batch's device
    rows are read, or taken from the cache, as its first unit begins)."""
    s = Store(url)
    fleet, auth = Fleet(s, BlobStore(tmp_path / "blobs")), DeviceAuth(s)
    for d in ("d0", "d1"):
        fleet.enrol({"id": d, "class": "c"})
    w = StoreWorker(s)
    states = iter(range(10**6))
    try:
        async def report(state, counter=None, key=None, hint="d1", key_only=False):
            m = {ReportKey.ID: "d1", ReportKey.CLASS: "c", ReportKey.SEQ: 1,
                 ReportKey.STATE: state, ReportKey.RESULT: 0}
            if key is not None:
                m[ReportKey.AUTH] = [counter, devauth.mac(key, devauth.REPORT_LABEL, counter,
                                                          devauth.body_of(m, ReportKey.AUTH))]
            r = parse_report(cbor2.dumps({k: v for k, v in m.items() if k != ReportKey.AUTH}))
            r0 = parse_report(cbor2.dumps({ReportKey.ID: "d0", ReportKey.CLASS: "c",
                                           ReportKey.SEQ: 1, ReportKey.STATE: next(states) % 4,
                                           ReportKey.RESULT: 0}))
            go, _ = held(w)
            first = w.call(lambda: fleet.report(r0, "127.0.0.1:1"), grouped=True, device="d0")
            then = w.call((lambda: auth.check_report(m)) if key_only else
                          (lambda: (auth.check_report(m), fleet.report(r, "127.0.0.1:1"))),
                          grouped=True, device=hint)
            go.set()
            await first
            return await then

        for state in (1, 2, 1):
            await report(state)
        other = Store(url)
        with other.transaction():
            other._exec("UPDATE devices SET class=? WHERE id=?", ("z", "d1"))
        other.close()
        await report(2)
        assert [ev["detail"] for ev in await w.call(lambda: s.device_events("d1", 2))] == \
            ["class z -> c", "downloading/initial -> downloaded/initial"]
        key = await w.call(lambda: auth.provision("d1"))
        with pytest.raises(Refused, match="must be authenticated"):
            await report(1)
        await report(1, 5, key)
        await report(2, 6, key, hint="d2", key_only=True)  # its batch read no row of d1
        with pytest.raises(Refused, match="replayed report: counter 6"):
            await report(1, 6, key)
        await report(1, 7, key)
        assert (await w.call(lambda: s.device_events("d1", 1)))[0]["detail"] == \
            "downloaded/initial -> downloading/initial"
    finally:
        w.close()
        s.close()


def test_row_cache_bounds():
    """At most max_rows rows (the least recently reported go), none older than max_age, none
    after another connection's commit (the version changed), none after a write it cannot
    follow (stale) or a rollback."""
    c = RowCache(max_rows=2, max_age=10.0)

    def batch(ids, version=1, now=0.0):
        c.check(version, now)
        found, missing = c.take(ids)
        for i in ids:
            row = found.get(i) or {"id": i, "class": "c", "seq": 0, "state": 0, "result": 0,
                                   "address": None}
            c.stage(row, "c", 1, 2, 0, "a")
        c.committed()
        return sorted(found), missing

    assert batch(["a", "b"]) == ([], ["a", "b"])
    assert batch(["b", "c"]) == (["b"], ["c"])
    assert list(c.rows) == ["b", "c"] and c.rows["b"]["state"] == 2  # "a" went first
    assert batch(["b"], version=2) == ([], ["b"])  # another connection committed
    assert batch(["b"], version=2, now=11.0) == ([], ["b"])  # too old
    c.stale = True
    c.committed()
    assert c.rows == {} and not c.stale
    assert batch(["b"], version=2, now=11.0) == ([], ["b"])
    c.take(["b"])
    c.clear()  # a rollback: what it took is not back
    assert c.take(["b"]) == ({}, ["b"])


def test_a_devices_events_filed_or_not(url):
    """A device's newest events are the same, in pages (before an id), whether the sweeper has
    filed them by device yet (Repo.file_events), filed some, or all; a database from before
    migration 8 has its events filed by it."""
    head = MIGRATIONS[7:]
    del MIGRATIONS[7:]  # a gateway from before: its events have an index by device
    try:
        s = Store(url)
        with s.transaction():
            for k in range(10):
                s.event("x", str(k), device=f"d{k % 3}")
        s.close()
    finally:
        MIGRATIONS.extend(head)
    s = Store(url)
    try:
        with s.transaction():
            for k in range(10, 30):
                s.event("x", str(k), device=f"d{k % 3}")
        assert s._scalar("SELECT upto FROM events_filed") == 10  # migration 8 filed those
        ids = {ev["detail"]: ev["id"] for ev in s.events_since(0, 100)}
        mine = [str(k) for k in range(30) if k % 3 == 1]  # d1's, oldest first

        def pages():
            return ([ev["detail"] for ev in s.device_events("d1", 4)],
                    [ev["detail"] for ev in s.device_events_page("d1", ids["22"], 3)],
                    [ev["detail"] for ev in s.device_events_page("d1", None, 100)])

        expected = (mine[-4:], ["19", "16", "13"], mine[::-1])
        assert pages() == expected
        for most, filed in ((4, 14), (100, 30), (100, 30)):
            with s.transaction():
                s.file_events(most)
            assert s._scalar("SELECT upto FROM events_filed") == filed
            assert pages() == expected
        assert s._scalar("SELECT COUNT(*) FROM events_by_device WHERE device='d1'") == 10
    finally:
        s.close()


def test_report_keys_and_counters(url):
    s = Store(url)
    try:
        key = bytes(range(32))
        with s.transaction():
            add_device(s, "d1")
            s.set_device_key("d1", key)
        assert s.device_key("d1") == {"key": key, "counter": 0}
        top = 2**63 - 1
        for counter in (5, 3, top, 7):  # only ever goes up, up to the largest signed 64 bits
            with s.transaction():
                s.raise_counter("d1", counter)
        assert s.device_key("d1")["counter"] == top
        with s.transaction():
            s.set_device_key("d1", key[::-1])  # a new key starts over
        assert s.device_key("d1") == {"key": key[::-1], "counter": 0}
        assert s.device_key("nobody") is None
    finally:
        s.close()


def test_times_keep_their_precision(url):
    t = 1_790_000_000.123456
    s = Store(url, clock=lambda: t)
    try:
        s.event("test", "x")
        assert s.events_since(t, 1)[0]["time"] == t
    finally:
        s.close()


def test_the_store_refuses_other_threads_once_bound(url):
    """Once the gateway serves, a database call from any thread but the store's (the event
    loop's, say) raises instead of waiting there."""
    s = Store(url)
    w = StoreWorker(s)
    try:
        with pytest.raises(RuntimeError, match="outside its thread"):
            s.device("d1")
        assert w.call_sync(lambda: s.device("d1")) is None
    finally:
        w.close()
        s.close()


def test_store_batch_group_commit(url):
    """The gateway's synchronous store: transactions inside batch() share one commit, a
    failing one is rolled back alone, answers wait for the commit."""
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
