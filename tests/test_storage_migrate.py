"""``fota-gateway migrate``: a SQLite gateway's state copied to PostgreSQL, row for row, ids
kept and new ids above them; a non-empty target is refused and keeps what it had."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import REPO

from gateway.blobs import BlobStore
from gateway.fleet import Fleet
from gateway.requests import parse_report
from gateway.storage.repo import TABLES
from gateway.store import Store
from proto import manifest, uris
from proto.codes import Result, State
from proto.keys import ReportKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"migrate test key").digest())


def make_gateway_state(data):
    """A little history through the fleet's own code: devices, an image, a campaign, jobs in
    several states, a report key, events."""
    data.mkdir()
    store = Store(data / "gateway.sqlite3")
    blobs = BlobStore(data / "blobs")
    fleet = Fleet(store, blobs)
    image = os.urandom(1500)
    digest = hashlib.sha256(image).digest()
    temp, fd = blobs.new_temp(digest.hex())
    os.write(fd, image)
    blobs.commit_temp(temp, fd, digest.hex())
    signed = manifest.sign(manifest.build(seq=2, vendor=manifest.DEFAULT_VENDOR,
                                          device_class="m", digest=digest, size=len(image),
                                          uri=uris.image_path(digest)), KEY)
    img = fleet.register_image({"manifest": signed, "class": "m",
                                "vendor": manifest.DEFAULT_VENDOR})

    def report(device, state=State.IDLE, result=Result.INITIAL, job=None):
        m = {ReportKey.ID: device, ReportKey.CLASS: "m", ReportKey.SEQ: 1,
             ReportKey.STATE: state, ReportKey.RESULT: result}
        if job is not None:
            m[ReportKey.JOB] = job
        return fleet.report(parse_report(cbor2.dumps(m)), "127.0.0.1:5000")

    for k in range(5):
        report(f"d{k}")
    fleet.enrol({"id": "d9", "class": "m", "tags": ["lab"]})
    camp = fleet.create_campaign({"image": img["id"], "devices": ["d0", "d1", "d2"]})
    report("d0", job=None)  # offered
    report("d1", State.DOWNLOADING, job=store.jobs_of_campaign(camp["id"])[1]["id"])
    store.set_device_key("d3", bytes(range(32)))
    store.close()
    blobs.close()


def dump(url):
    s = Store(url)
    try:
        return {t: [row for rows in s.table_rows(t) for row in rows] for t in TABLES}
    finally:
        s.close()


def migrate(*args):
    return subprocess.run([sys.executable, "-m", "gateway", "migrate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_sqlite_to_postgresql(tmp_path, pg_url):
    data = tmp_path / "gw"
    make_gateway_state(data)
    before = dump(f"sqlite:///{data / 'gateway.sqlite3'}")
    assert len(before["jobs"]) == 3 and len(before["events"]) > 5
    p = migrate("--data", str(data), "--to", pg_url)
    assert p.returncode == 0, p.stderr
    assert "copied 6 devices, 1 images, 1 campaigns, 3 jobs" in p.stdout
    assert "1 blob files" in p.stdout  # the firmware, for every gateway on the database
    assert dump(pg_url) == before  # every row, every column, ids included

    s = Store(pg_url)  # new rows get ids above the copied ones
    try:
        digest = before["images"][0]["digest"]
        assert s.blob(digest) == (data / "blobs" / digest).read_bytes()
        ev = s.event("test", "after the move")
        assert ev["id"] == max(x["id"] for x in before["events"]) + 1
    finally:
        s.close()

    p = migrate("--data", str(data), "--to", pg_url)  # again: the target is not empty
    assert p.returncode == 2 and "target store is not empty" in p.stderr
    assert len(dump(pg_url)["events"]) == len(before["events"]) + 1


def test_bad_urls_are_one_line_errors(tmp_path):
    p = migrate("--data", str(tmp_path), "--to", "mysql://x")
    assert p.returncode == 2 and "must start with sqlite:/// or postgresql://" in p.stderr
    p = migrate("--data", str(tmp_path), "--to", f"sqlite:///{tmp_path / 'new.sqlite3'}")
    assert p.returncode == 2 and "no gateway database under" in p.stderr
