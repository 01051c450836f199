"""The fleet's logic in-process, on both engines, with a fake clock: device listings page and
filter (what `cc devices` asks at 100,000 devices), campaign views stay bounded, and deadlines
and offer timeouts follow the injected clock, not the wall clock."""

from __future__ import annotations

import hashlib
import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from clock import Clock

from gateway import fleet as fleet_mod
from gateway import views
from gateway.blobs import BlobStore
from gateway.fleet import Fleet
from gateway.requests import Refused, parse_report
from gateway.store import Store
from proto import manifest, uris
from proto.codes import Result, State
from proto.keys import ReportKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"in-process fleet").digest())


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'gw.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    clock = Clock(1_790_000_000.0)
    store = Store(url, clock=clock)
    blobs = BlobStore(tmp_path / "blobs")
    f = Fleet(store, blobs, clock=clock)
    yield f
    store.close()
    blobs.close()


def report(f: Fleet, device: str, state=State.IDLE, result=Result.INITIAL, job=None, seq=1):
    m = {ReportKey.ID: device, ReportKey.CLASS: "m", ReportKey.SEQ: seq,
         ReportKey.STATE: state, ReportKey.RESULT: result}
    if job is not None:
        m[ReportKey.JOB] = job
    return f.report(parse_report(cbor2.dumps(m)), "127.0.0.1:5000")


def image(f: Fleet) -> dict:
    data = os.urandom(1500)
    digest = hashlib.sha256(data).digest()
    temp, fd = f.blobs.new_temp(digest.hex())
    os.write(fd, data)
    f.blobs.commit_temp(temp, fd, digest.hex())
    signed = manifest.sign(manifest.build(seq=2, vendor=manifest.DEFAULT_VENDOR,
                                          device_class="m", digest=digest, size=len(data),
                                          uri=uris.image_path(digest)), KEY)
    return f.register_image({"manifest": signed, "class": "m", "vendor": manifest.DEFAULT_VENDOR})


def test_device_listing_pages_filters_and_summarises(fleet):
    for k in range(7):
        report(fleet, f"d{k}", State.DOWNLOADING if k < 2 else State.IDLE)
    fleet.enrol({"id": "d5", "class": "m", "tags": ["lab", "50%_x"]})
    page = fleet.views.device_views(("offset=2", "limit=3"))
    assert [d["id"] for d in page] == ["d2", "d3", "d4"]
    assert [d["id"] for d in fleet.views.device_views(("state=downloading",))] == ["d0", "d1"]
    assert [d["id"] for d in fleet.views.device_views(("tag=50%_x",))] == ["d5"]
    assert fleet.views.device_views(("tag=50%",)) == []  # whole tags only, LIKE characters escaped
    assert fleet.views.device_views(("summary", "class=m")) == {
        "total": 7, "by_state": {"downloading": 2, "idle": 5}, "by_class": {"m": 7}}
    for bad in (("state=busy",), ("limit=x",), ("colour=red",)):
        with pytest.raises(Refused):
            fleet.views.device_views(bad)


def test_deadlines_and_offer_timeouts_follow_the_injected_clock(fleet, monkeypatch):
    img = image(fleet)
    for k in range(5):
        report(fleet, f"d{k}")
    camp = fleet.create_campaign({"image": img["id"], "class": "m", "timeout": 600,
                                  "offer_timeout": 60})
    cmd = report(fleet, "d0")  # offered
    assert cmd is not None and fleet.store.job(cmd[2])["state"] == "offered"
    fleet.clock.t += 59
    assert fleet.expire() == 0
    fleet.clock.t += 2  # the offer's minute is over: back in the queue, its slot free
    assert fleet.expire() == 1 and fleet.store.job(cmd[2])["state"] == "queued"
    report(fleet, "d1", State.DOWNLOADING, job=None)
    monkeypatch.setattr(views, "JOBS_IN_VIEW", 2)
    view = fleet.views.campaign_view(fleet.store.campaign(camp["id"]), with_jobs=True)
    assert view["total"] == 5 and len(view["jobs"]) == 2  # bounded, counts still whole
    fleet.clock.t += 600  # past the deadline: every active job times out, the campaign ends
    assert fleet.expire() == 5
    view = fleet.views.campaign_view(fleet.store.campaign(camp["id"]))
    assert view["counts"] == {"timed_out": 5} and view["state"] == "done"


def test_a_big_campaign_is_refreshed_every_few_changes_and_by_the_sweeper(fleet, monkeypatch):
    monkeypatch.setattr(fleet_mod, "REFRESH_SHARE", 2)  # 6 jobs: a scan every 3 changes
    img = image(fleet)
    for k in range(6):
        report(fleet, f"d{k}")
    camp = fleet.create_campaign({"image": img["id"], "class": "m"})
    for k in range(6):
        job = report(fleet, f"d{k}")[2]
        report(fleet, f"d{k}", result=Result.SUCCESS, job=job, seq=2)
    row = fleet.store.campaign(camp["id"])
    assert fleet.views.campaign_view(row)["counts"] == {"succeeded": 6}
    assert row["state"] == "running"  # the last two successes wait for the sweeper
    assert fleet.expire() == 0
    assert fleet.store.campaign(camp["id"])["state"] == "done"


def test_campaign_targets_are_checked_in_a_few_statements(fleet, monkeypatch):
    """A campaign's targets are read and checked against running campaigns in as many
    statements for 38 devices as for 2 (it was a query per target: 17-35 s for 100,000 on
    PostgreSQL); an unknown device and a device in a running campaign are still refused."""
    img = image(fleet)
    for k in range(40):
        report(fleet, f"d{k}")
    statements = []
    run = fleet.store._exec
    monkeypatch.setattr(fleet.store, "_exec",
                        lambda sql, args=(), **kw: (statements.append(sql), run(sql, args, **kw))[1])

    def create(ids):
        statements.clear()
        camp = fleet.create_campaign({"image": img["id"], "devices": ids})
        return camp["total"], len(statements)

    with pytest.raises(Refused, match="unknown device 'nope'"):
        create(["d0", "nope"])
    with pytest.raises(Refused, match="unknown device 7"):
        create(["d0", 7])
    few = create(["d0", "d1", "d0"])
    many = create([f"d{k}" for k in range(2, 40)])
    assert few[0] == 2 and many[0] == 38 and few[1] == many[1]
    with pytest.raises(Refused, match="device.s. d1, d0 already in a running campaign"):
        create(["d1", "d0"])
