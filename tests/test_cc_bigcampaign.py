"""`cc status` and `cc devices` of a campaign of 20,000 devices: the real `cc` against the real
gateway, whose store was filled in-process (the fleet's own methods on the same SQLite file). What
crosses the control API stays summarised or paged whatever the fleet's size: counts per state
and phase, the first jobs, a page of devices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import REPO, GatewayProc
from test_fleet_inprocess import image

from gateway.blobs import BlobStore
from gateway.fleet import Fleet
from gateway.store import Store

N = 20_000


def fill(data: Path) -> None:
    """N enrolled devices, one image, one campaign (canary + waves) to all of them."""
    data.mkdir(parents=True)
    store = Store(f"sqlite:///{data / 'gateway.sqlite3'}")
    blobs = BlobStore(data / "blobs")
    fleet = Fleet(store, blobs)
    img = image(fleet)  # class "m"
    with store.transaction():
        for k in range(N):
            store.add_enrolled_device(f"big-{k:05d}", "m", "[]")
    camp = fleet.create_campaign({"image": img["id"], "all": True, "canary": 200, "wave": "25%"})
    assert camp["id"] == 1 and camp["total"] == N
    store.close()
    blobs.close()


def cc(gw: GatewayProc, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as an operator runs it."""
    r = subprocess.run([str(Path(sys.executable).with_name("cc")), "--gateway", gw.control_uri,
                        *args], cwd=REPO, text=True, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def test_status_and_devices_of_20000_stay_summarised(tmp_path):
    fill(tmp_path / "gw")
    gw = GatewayProc(tmp_path / "gw").start()
    try:
        status = cc(gw, "status", "1")
        people = status.stdout
        assert f"{N} queued (of {N})" in people and "canary" in people
        rows = [line for line in people.splitlines() if "big-" in line]
        assert len(rows) == 20  # the first jobs only; the counts say the rest
        assert f"and {N - 20} more" in status.stderr  # the caption (stdout: rows when piped)
        assert len(people) < 6_000

        camp = json.loads(cc(gw, "status", "1", "--json", "--jobs", "0").stdout)
        assert camp["total"] == N and camp["jobs"] == []
        assert [p["total"] for p in camp["phases"]] == [200, 5000, 5000, 5000, 4800]
        scripted = cc(gw, "status", "1", "--json").stdout
        assert len(json.loads(scripted)["jobs"]) == 1000  # the most one answer carries
        assert len(scripted) < 400_000

        summary = json.loads(cc(gw, "devices", "--summary", "--json").stdout)
        assert summary == {"total": N, "by_state": {"idle": N}, "by_class": {"m": N}}
        page = json.loads(cc(gw, "devices", "--campaign", "1", "--offset", "19990",
                             "--json").stdout)
        assert [d["id"] for d in page] == [f"big-{k:05d}" for k in range(19990, N)]
    finally:
        gw.stop()
