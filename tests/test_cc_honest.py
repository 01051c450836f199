"""Issue 9, honest results: what `cc` says matches what happened, through the real CLI and a real
gateway (one gateway for the module; device ids are unique per test).

Older images are skipped (not "succeeded"), a campaign that updated nothing exits non-zero,
hopeless campaigns are refused at creation, a corrupt blob pauses its campaign at once and stops
the downloads, windows that cannot open are refused, Ctrl-C says what goes on, and the small
things (device port in the URI, one-line usage errors, no "wave 1" without phases, the relay's
port clash, a silent gateway named by fota-sim).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccfleet import gw, home, run, wake  # noqa: F401 (gw, home: fixtures)
from harness import REPO, free_udp_port
from test_cc_gateway import CLASS, add_image, cc, cc_json, error_line

from cc.main import app
from proto.codes import Op, Result, State
from proto.keys import CmdKey


async def test_older_image_is_skipped_not_succeeded(gw, home, tmp_path, coap_client):
    ctx = coap_client
    old = await run(add_image, gw, home, tmp_path, b"old image" * 100, 2)
    for d in ("new-1", "new-2"):
        await wake(ctx, gw, d, seq=4)
    # nobody can take seq 2: refused at creation, nothing started
    line = error_line(await run(cc, gw, home, "upgrade", old["id"], "--device", "new-1",
                                "--device", "new-2", "--wait"))
    assert "4.09" in line and "no targeted device can take" in line and "seq 4" in line
    # one device behind, one ahead: the one ahead is skipped at once, the other updates
    img = await run(add_image, gw, home, tmp_path, b"seq three" * 100, 3)
    await wake(ctx, gw, "behind", seq=1)
    camp = await run(cc_json, gw, home, "upgrade", img["id"], "--device", "behind",
                     "--device", "new-1")
    assert camp["counts"] == {"queued": 1, "skipped": 1}
    cmd = await wake(ctx, gw, "behind", seq=1)
    assert cmd[CmdKey.OP] == Op.UPDATE
    await wake(ctx, gw, "behind", seq=3, result=Result.SUCCESS, job=cmd[CmdKey.JOB])
    done = await run(cc, gw, home, "status", "--watch", str(camp["id"]))
    assert done.returncode == 0, done.stdout
    assert "1 device(s) updated, 1 skipped" in done.stdout and "succeeded" not in done.stdout
    # a device that reports a newer seq before its offer: skipped; nothing updated -> exit 1
    await wake(ctx, gw, "late-news", seq=1)
    camp = await run(cc_json, gw, home, "upgrade", img["id"], "--device", "late-news")
    await wake(ctx, gw, "late-news", seq=5)
    none = await run(cc, gw, home, "status", "--watch", str(camp["id"]))
    assert none.returncode == 1
    assert "nothing updated" in none.stdout and "already run" in none.stdout


async def test_corrupt_blob_pauses_the_campaign_and_stops_devices(gw, home, tmp_path,
                                                                  coap_client):
    from aiocoap import GET, Message

    ctx = coap_client
    data = os.urandom(3000)
    img = await run(add_image, gw, home, tmp_path, data, 6)
    await wake(ctx, gw, "rot-1", seq=1)
    camp = await run(cc_json, gw, home, "upgrade", img["id"], "--device", "rot-1")
    cmd = await wake(ctx, gw, "rot-1", seq=1)
    job = cmd[CmdKey.JOB]
    await wake(ctx, gw, "rot-1", seq=1, state=State.DOWNLOADING, job=job, progress=0)
    blob = gw.data / "blobs" / img["digest"]
    blob.write_bytes(bytes(len(data)))  # bit rot: same size, other bytes
    resp = await asyncio.wait_for(ctx.request(Message(
        code=GET, uri=gw.device_uri + img["uri"])).response, 10)
    assert resp.code.dotted == "5.00"
    status = await run(cc_json, gw, home, "status", str(camp["id"]))
    assert status["state"] == "paused" and "does not hash to its name" in status["reason"]
    people = await run(cc, gw, home, "status", str(camp["id"]))
    assert "paused" in people.stdout and "does not hash to its name" in people.stdout
    [row] = [line for line in (await run(cc, gw, home, "status")).stdout.splitlines()
             if line.startswith(f"{camp['id']}\t")]
    assert "paused" in row and row.endswith("blob does not hash to its name")
    devices = await run(cc, gw, home, "devices")
    [row] = [line for line in devices.stdout.splitlines() if line.startswith("rot-1\t")]
    assert f"campaign {camp['id']} paused" in row
    images = await run(cc, gw, home, "firmware", "list")
    [row] = [line for line in images.stdout.splitlines() if line.startswith(img["id"])]
    assert row.endswith("blob does not hash to its name")
    # the downloading device is told to stop; its cancel does not fail the job
    cmd = await wake(ctx, gw, "rot-1", seq=1, state=State.DOWNLOADING, job=job, progress=1024)
    assert cmd == {CmdKey.OP: Op.CANCEL, CmdKey.JOB: job}
    assert await wake(ctx, gw, "rot-1", seq=1, result=Result.CANCELLED, job=job) == {}
    status = await run(cc_json, gw, home, "status", str(camp["id"]))
    assert status["counts"] == {"queued": 1}
    # resume is refused while the blob is bad; once re-uploaded the campaign goes on
    line = error_line(await run(cc, gw, home, "resume", str(camp["id"])))
    assert "4.09" in line and "upload it again" in line
    await run(add_image, gw, home, tmp_path, data, 6)  # the same file again: the blob is good
    assert (await run(cc_json, gw, home, "resume", str(camp["id"])))["state"] == "running"
    assert (await wake(ctx, gw, "rot-1", seq=1))[CmdKey.OP] == Op.UPDATE
    assert (await run(cc_json, gw, home, "firmware", "list"))[-1]["problem"] is None


async def test_windows_that_cannot_open_and_zones(gw, home, tmp_path, coap_client):
    img = await run(add_image, gw, home, tmp_path, b"windowed" * 50, 2)
    await wake(coap_client, gw, "win-1", seq=1)
    hour = (time.gmtime().tm_hour + 3) % 24
    line = error_line(await run(cc, gw, home, "upgrade", img["id"], "--device", "win-1",
                                "--window", f"0 {hour} * * *", "--timeout", "600"))
    assert "next opens" in line and "UTC" in line and "deadline" in line
    line = error_line(await run(cc, gw, home, "upgrade", img["id"], "--device", "win-1",
                                "--window-duration", "2h"))
    assert "need --window" in line
    line = error_line(await run(cc, gw, home, "upgrade", img["id"], "--device", "win-1",
                                "--window", "* * * * *", "--window-tz", "Mars/Olympus"))
    assert "unknown time zone 'Mars/Olympus'" in line
    camp = await run(cc_json, gw, home, "upgrade", img["id"], "--device", "win-1", "--window",
                     f"0 {hour} * * *", "--window-tz", "Asia/Kolkata", "--timeout", "90000")
    shown = await run(cc, gw, home, "status", str(camp["id"]))
    assert "(Asia/Kolkata)" in shown.stdout and "IST" in shown.stdout
    assert time.strftime("%Z") in shown.stdout  # the deadline carries the local zone
    await run(cc, gw, home, "cancel", str(camp["id"]))


async def test_single_phase_failure_has_no_wave_label(gw, home, tmp_path, coap_client):
    ctx = coap_client
    img = await run(add_image, gw, home, tmp_path, b"bad boot" * 80, 2)
    await wake(ctx, gw, "solo-1", seq=1)
    camp = await run(cc_json, gw, home, "upgrade", img["id"], "--device", "solo-1")
    cmd = await wake(ctx, gw, "solo-1", seq=1)
    await wake(ctx, gw, "solo-1", seq=1, result=Result.ROLLED_BACK, job=cmd[CmdKey.JOB])
    out = await run(cc, gw, home, "status", "--watch", str(camp["id"]))
    assert out.returncode == 1 and "rolled_back" in out.stdout
    assert "wave" not in out.stdout and "phase" not in out.stdout


def test_firmware_add_prints_the_real_device_port_and_usage_errors_are_one_line(gw, home,
                                                                              tmp_path, capsys):
    from cc.main import cli

    f = tmp_path / "port.bin"
    f.write_bytes(b"port" * 300)
    out = cc(gw, home, "firmware", "add", str(f), "--version", "2", "--class", CLASS)
    assert out.returncode == 0, out.stderr
    assert f"coap://127.0.0.1:{gw.device_port}/f/" in out.stdout
    # usage errors through the installed entry point (cc.main:cli), in-process
    for argv, start, needle in (
            (["firmware", "add", str(f), "--version", "two", "--class", CLASS],
             "cc: firmware add: ", "'--version'"),
            (["upgrade"], "cc: upgrade: ", "IMAGE"),
            (["statu"], "cc: No such command 'statu'", "status")):
        with pytest.raises(SystemExit) as exit_:
            cli(["--gateway", gw.control_uri, "--home", str(home), *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(start) and needle in err
    from gateway.main import cli as gateway_cli  # fota-gateway's entry point: the same rule

    for argv, start in ((["serve"], "fota-gateway: No such command 'serve'"),
                        (["run", "--bindd", "x"], "fota-gateway: run: No such option: --bindd")):
        with pytest.raises(SystemExit) as exit_:
            gateway_cli(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(start), err


def test_upgrade_wait_ctrl_c_says_the_campaign_goes_on(gw, home, tmp_path):
    image = add_image(gw, home, tmp_path, b"interrupted" * 100, 2)
    cc(gw, home, "devices", "add", "sleepy-1", "--class", CLASS)
    p = subprocess.Popen([sys.executable, "-m", "cc", "--gateway", gw.control_uri, "--home",
                          str(home), "upgrade", image["id"], "--device", "sleepy-1", "--wait"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()  # "campaign N started: …" (rich flushes each print)
        assert "started" in first, first
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    n = first.split()[1]
    assert p.returncode == 130, err
    assert "Traceback" not in err and f"campaign {n} goes on" in err
    assert f"cc status --watch {n}" in err
    assert cc_json(gw, home, "status", n)["state"] == "running"
    cc(gw, home, "cancel", n)


def test_fota_demo_ctrl_c_without_traceback(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "sim.demo"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    try:
        lines = []
        for _ in range(10):  # bounded: the first lines come within seconds
            lines.append(p.stdout.readline())
            if "signing key made" in lines[-1]:
                break
        assert "signing key made" in lines[-1], lines
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in out + err and "interrupted" in out
    work = Path(lines[0].split("work dir ")[1].strip())
    assert not work.exists()  # cleaned up


def test_relay_port_clash_exits_2_and_sim_names_a_silent_gateway(tmp_path, capsys):
    from sim import relay

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        code = relay.main(["--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9",
                           "--duration", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("fota-relay: "), err
    silent = free_udp_port()  # nobody listens there
    p = subprocess.Popen([sys.executable, "-m", "sim.main", "--gateway",
                          f"coap://127.0.0.1:{silent}", "--class", CLASS, "--trust", "00" * 32,
                          "--state", str(tmp_path / "sim")], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # the sim runs on after the line: wait for it, bounded (it comes after about 3 s)
        ready, _, _ = select.select([p.stderr], [], [], 30)
        line = p.stderr.readline() if ready else ""
    finally:
        p.kill()
        p.wait()
    assert "does not answer" in line and f"127.0.0.1:{silent}" in line, line


def test_version_everywhere(capsys):
    """--version on every program (in-process: five interpreters would cost ~4 s)."""
    from importlib.metadata import version

    from gateway.main import app as gateway_app
    from sim import demo, relay
    from sim import main as sim_main

    v = version("fota-micropython")
    for typer_app, name in ((app, "cc"), (gateway_app, "fota-gateway")):
        r = CliRunner().invoke(typer_app, ["--version"])
        assert (r.exit_code, r.stdout) == (0, f"{name} {v}\n")
    for main, name in ((sim_main.main, "fota-sim"), (demo.main, "fota-demo"),
                       (relay.main, "fota-relay")):
        with pytest.raises(SystemExit) as exit_:
            main(["--version"])
        assert exit_.value.code == 0 and capsys.readouterr().out == f"{name} {v}\n"
