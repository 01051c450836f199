"""cc against the real gateway (``gateway`` fixture: a ``python -m gateway run`` subprocess).

Most calls run the real typer app in-process (CliRunner: a subprocess costs ~0.8 s of imports);
exit codes and the one-line stderr are also checked through ``python -m cc``. The last tests play
a device with a few lines of aiocoap (CON POST ``r`` reports, per proto/keys.py) while
``cc upgrade --wait`` runs as a subprocess: its exit status is the verdict.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest
from aiocoap import GET, POST, Message
from typer.testing import CliRunner

from cc.main import app
from proto import manifest, uris
from proto.codes import JobState, Op, Result, State
from proto.keys import CmdKey, ManifestKey, ReportKey

REPO = Path(__file__).resolve().parent.parent
CLASS = "esp32-test"


def cc(gw, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in-process; the result looks like a finished subprocess."""
    argv = ["--gateway", gw.control_uri, "--home", str(home), *args]
    r = CliRunner().invoke(app, argv)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(argv, r.exit_code, r.stdout, r.stderr)


def cc_proc(gw, home: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cc", "--gateway", gw.control_uri, "--home", str(home), *args],
        cwd=REPO, text=True, capture_output=True, timeout=timeout)


def cc_json(gw, home: Path, *args: str) -> Any:
    r = cc(gw, home, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "cc-home"
    assert CliRunner().invoke(app, ["--home", str(home), "keys", "init"]).exit_code == 0
    return home


def add_image(gw, home: Path, tmp_path: Path, data: bytes, seq: int) -> dict[str, Any]:
    f = tmp_path / f"app-{seq}.bin"
    f.write_bytes(data)
    return cc_json(gw, home, "firmware", "add", str(f), "--version", str(seq), "--class", CLASS)


async def test_firmware_add_uploads_the_exact_bytes_and_lists(gateway, home, tmp_path,
                                                             coap_client):
    data = bytes(range(251)) * 300  # 75,300 bytes: 74 blocks, the last one short
    image = await asyncio.to_thread(add_image, gateway, home, tmp_path, data, 5)
    digest = hashlib.sha256(data).hexdigest()
    assert image["id"] == digest[:uris.IMAGE_ID_HEX]
    assert image["uri"] == uris.image_path(bytes.fromhex(digest))
    assert (image["digest"], image["size"], image["seq"], image["class"]) == (
        digest, len(data), 5, CLASS)
    assert image["vendor"] == manifest.DEFAULT_VENDOR
    listed = await asyncio.to_thread(cc_json, gateway, home, "firmware", "list")
    assert [i["id"] for i in listed] == [image["id"]]
    # What a device would download is what cc hashed (Block2 GET on the device API).
    resp = await asyncio.wait_for(coap_client.request(
        Message(code=GET, uri=gateway.device_uri + image["uri"])).response, 20)
    assert resp.code.is_successful() and resp.payload == data
    people = await asyncio.to_thread(cc_proc, gateway, home, "firmware", "add",
                                     str(tmp_path / "app-5.bin"), "--version", "5", "--class",
                                     CLASS)
    assert people.returncode == 0, people.stderr
    assert image["id"] in people.stdout and f"/f/{image['id']}" in people.stdout


def test_devices_add_list_show(gateway, home):
    dev = cc_json(gateway, home, "devices", "add", "lab-1", "--class", CLASS, "--tag", "lab",
                  "--tag", "floor-2")
    assert (dev["id"], dev["class"], dev["enrolled"], dev["tags"]) == (
        "lab-1", CLASS, True, ["lab", "floor-2"])
    assert cc(gateway, home, "devices", "add", "lab-2", "--class", CLASS).returncode == 0
    listed = cc_json(gateway, home, "devices")
    assert [d["id"] for d in listed] == ["lab-1", "lab-2"]
    assert set(listed[0]) >= {"id", "class", "seq", "state", "result", "progress", "last_seen",
                              "address", "enrolled", "tags"}
    table = cc(gateway, home, "devices")
    assert table.returncode == 0 and "lab-1" in table.stdout and "lab-2" in table.stdout
    shown = cc_json(gateway, home, "device", "show", "lab-1")
    assert shown["jobs"] == [] and any(e["kind"] == "enrolled" for e in shown["events"])
    line = error_line(cc_proc(gateway, home, "device", "show", "nobody"))
    assert "4.04" in line and "unknown device" in line
    log = cc_json(gateway, home, "events")
    assert {("lab-1", "enrolled"), ("lab-2", "enrolled")} <= {(e["device"], e["kind"]) for e in log}
    assert cc_json(gateway, home, "events", "--since", str(time.time() + 3600)) == []


def test_upgrade_unknown_image_or_device(gateway, home, tmp_path):
    image = add_image(gateway, home, tmp_path, b"v2" * 600, seq=2)
    cc(gateway, home, "devices", "add", "d1", "--class", CLASS)
    line = error_line(cc_proc(gateway, home, "upgrade", "00000000", "--device", "d1"))
    assert "4.04" in line and "unknown image" in line
    line = error_line(cc(gateway, home, "upgrade", image["id"], "--device", "ghost", "--wait"))
    assert "4.04" in line and "ghost" in line
    cc(gateway, home, "devices", "add", "other", "--class", "another-class")
    line = error_line(cc_proc(gateway, home, "upgrade", image["id"], "--all"))
    assert "4.00" in line and "other" in line  # the gateway's diagnostic, as it is
    assert cc_json(gateway, home, "status") == []  # nothing was started
    by_class = cc_json(gateway, home, "upgrade", image["id"], "--class", CLASS)
    assert by_class["total"] == 1


def test_upgrade_status_and_cancel(gateway, home, tmp_path):
    image = add_image(gateway, home, tmp_path, b"v3" * 1000, seq=3)
    for d in ("d1", "d2"):
        assert cc(gateway, home, "devices", "add", d, "--class", CLASS).returncode == 0
    camp = cc_json(gateway, home, "upgrade", image["id"], "--device", "d1", "--device", "d2")
    n = camp["id"]
    assert (camp["image"], camp["total"], camp["state"]) == (image["id"], 2, "running")
    assert [c["id"] for c in cc_json(gateway, home, "status")] == [n]
    detail = cc_json(gateway, home, "status", str(n))
    assert sorted(j["device"] for j in detail["jobs"]) == ["d1", "d2"]
    assert {j["state"] for j in detail["jobs"]} == {JobState.QUEUED}
    people = cc(gateway, home, "status", str(n))
    assert people.returncode == 0 and "d1" in people.stdout and "queued" in people.stdout
    cancelled = cc_json(gateway, home, "cancel", str(n))
    assert cancelled["state"] == "cancelled" and cancelled["counts"] == {"cancelled": 2}
    watched = cc(gateway, home, "status", str(n), "--watch", "--json")
    assert watched.returncode == 1  # final already: returns instead of watching
    assert {j["result"] for j in json.loads(watched.stdout)["jobs"]} == {"cancelled"}
    line = error_line(cc(gateway, home, "cancel", "999"))
    assert "4.04" in line and "unknown campaign" in line


def test_upgrade_wait_times_out(gateway, home, tmp_path):
    image = add_image(gateway, home, tmp_path, b"v4" * 700, seq=4)
    cc(gateway, home, "devices", "add", "sleepy", "--class", CLASS)
    r = cc_proc(gateway, home, "upgrade", image["id"], "--device", "sleepy", "--timeout", "1",
                "--wait")
    assert r.returncode == 1, r.stderr
    assert "sleepy" in r.stdout and "timed_out" in r.stdout


# ---- a scripted device ---------------------------------------------------------------------
async def report(ctx, gw, **fields: Any) -> dict[int, Any]:
    """One wake: CON POST r with a CBOR report; returns the command (empty: nothing to do)."""
    payload = cbor2.dumps({int(ReportKey[k.upper()]): v for k, v in fields.items()})
    msg = Message(code=POST, uri=f"{gw.device_uri}/{uris.REPORT}", payload=payload,
                  content_format=60)
    resp = await asyncio.wait_for(ctx.request(msg).response, 10)
    assert resp.code.is_successful(), (resp.code, resp.payload)
    return cbor2.loads(resp.payload) if resp.payload else {}


async def wait_for_command(ctx, gw, device: str, seq: int) -> dict[int, Any]:
    for _ in range(100):  # bounded: 100 wakes, 0.2 s apart
        cmd = await report(ctx, gw, id=device, **{"class": CLASS}, seq=seq, state=State.IDLE,
                           result=Result.INITIAL)
        if cmd.get(CmdKey.OP) == Op.UPDATE:
            return cmd
        await asyncio.sleep(0.2)
    raise AssertionError("the gateway never offered the update")


DATA = b"new firmware" * 200


async def upgrade_waited(gateway, home, tmp_path, coap_client, outcome: int,
                         ) -> tuple[int, dict[str, Any], str]:
    """`cc upgrade --wait --json` while a scripted device takes the update, downloads half of
    it, then reports ``outcome``: cc's exit code, its campaign and its stderr."""
    image = await asyncio.to_thread(add_image, gateway, home, tmp_path, DATA, 7)
    await asyncio.to_thread(cc, gateway, home, "devices", "add", "dev-1", "--class", CLASS)
    public = (await asyncio.to_thread(cc, gateway, home, "keys", "public")).stdout.strip()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cc", "--gateway", gateway.control_uri, "--home", str(home),
        "upgrade", image["id"], "--device", "dev-1", "--timeout", "60", "--wait", "--json",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        cmd = await wait_for_command(coap_client, gateway, "dev-1", seq=1)
        # The manifest the gateway hands out is the one cc signed: it verifies with our key.
        m = manifest.verify(cmd[CmdKey.MANIFEST], [bytes.fromhex(public)])
        assert m[ManifestKey.SEQ] == 7 and m[ManifestKey.DIGEST] == hashlib.sha256(DATA).digest()
        assert m[ManifestKey.CLASS] == manifest.class_id(manifest.DEFAULT_VENDOR, CLASS)
        assert m[ManifestKey.URI] == image["uri"]
        job = cmd[CmdKey.JOB]
        await report(coap_client, gateway, id="dev-1", **{"class": CLASS}, seq=1,
                     state=State.DOWNLOADING, result=Result.INITIAL, progress=len(DATA) // 2,
                     job=job, size=len(DATA), target=7)
        await asyncio.sleep(0.6)  # let cc poll once mid-download
        final = dict(seq=7 if outcome == Result.SUCCESS else 1, state=State.IDLE, result=outcome)
        await report(coap_client, gateway, id="dev-1", **{"class": CLASS}, job=job, **final)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, json.loads(out), err.decode()


async def test_upgrade_wait_follows_a_device_to_success(gateway, home, tmp_path, coap_client):
    rc, camp, err = await upgrade_waited(gateway, home, tmp_path, coap_client, Result.SUCCESS)
    assert rc == 0, err
    [j] = camp["jobs"]
    assert (j["state"], j["result"], j["progress"]) == ("succeeded", "success", len(DATA))
    shown = await asyncio.to_thread(cc_json, gateway, home, "device", "show", "dev-1")
    assert shown["seq"] == 7


async def test_upgrade_wait_follows_a_device_to_failure(gateway, home, tmp_path, coap_client):
    rc, camp, err = await upgrade_waited(gateway, home, tmp_path, coap_client,
                                         Result.SIGNATURE_INVALID)
    assert rc == 1, err
    [j] = camp["jobs"]
    assert (j["state"], j["result"]) == ("failed", "signature_invalid")
    people = await asyncio.to_thread(cc, gateway, home, "status", str(camp["id"]), "--watch")
    assert people.returncode == 1 and "signature_invalid" in people.stdout


async def test_firmware_add_survives_a_gateway_restart(gateway, home, tmp_path):
    """The gateway restarts mid-upload: cc retries through the outage, gets 4.08 (the partial
    upload is gone) and starts over; the image lands whole."""
    data = hashlib.sha256(b"seed").digest() * 25_000  # 800 kB
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cc", "--gateway", gateway.control_uri, "--home", str(home),
        "firmware", "add", str(f), "--version", "9", "--class", CLASS, "--json",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        partial = gateway.data / "blobs" / "tmp"  # where the gateway streams an upload
        for _ in range(200):  # bounded: 10 s
            if partial.is_dir() and any(partial.iterdir()):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the upload never started")
        await asyncio.sleep(0.3)  # some blocks in (and answered), far from the end
        assert proc.returncode is None
        await asyncio.to_thread(gateway.restart)
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    image = json.loads(out)
    assert (image["digest"], image["size"]) == (hashlib.sha256(data).hexdigest(), len(data))


async def test_listings_larger_than_a_datagram(gateway, home, tmp_path, coap_client):
    """60 devices and a 60-job campaign are several kB: the gateway answers them with Block2."""
    for i in range(60):
        resp = await asyncio.wait_for(coap_client.request(Message(
            code=POST, uri=f"{gateway.control_uri}/{uris.DEV}", content_format=60,
            payload=cbor2.dumps({"id": f"fleet-device-{i:03d}", "class": CLASS,
                                 "tags": ["building-a", "floor-3"]}))).response, 10)
        assert resp.code.is_successful()
    listed = await asyncio.to_thread(cc_json, gateway, home, "devices")
    assert len(listed) == 60 and len(json.dumps(listed)) > 4096
    image = await asyncio.to_thread(add_image, gateway, home, tmp_path, b"fleet" * 300, 2)
    camp = await asyncio.to_thread(cc_json, gateway, home, "upgrade", image["id"], "--class", CLASS)
    detail = await asyncio.to_thread(cc_json, gateway, home, "status", str(camp["id"]))
    assert sorted(j["device"] for j in detail["jobs"]) == [d["id"] for d in listed]
