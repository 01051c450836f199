"""Issue 9, rollback and clean-up through the real cc and a real gateway (one gateway for the
module; ids unique per test): `cc rollback --to IMAGE`, `cc firmware add --supersede`, labels
and release notes, `cc devices rm`, `cc firmware rm`, `cc backup` restored and served, the data
directory lock.
"""

from __future__ import annotations

import asyncio
import tarfile

from aiocoap import GET, Message

from ccfleet import gw, home, run, wake  # noqa: F401 (gw, home: fixtures)
from harness import GatewayProc, free_udp_port, run_gateway_once
from test_cc_gateway import CLASS, add_image, cc, cc_json, error_line

from proto import manifest
from proto.codes import Op, Result
from proto.keys import CmdKey, ManifestKey


async def test_rollback_resigns_a_known_good_image_at_a_new_seq(gw, home, tmp_path, coap_client):
    ctx = coap_client
    good = await run(add_image, gw, home, tmp_path, b"known good" * 120, 2)
    bad = await run(add_image, gw, home, tmp_path, b"regression" * 120, 4)
    for d in ("rb-1", "rb-2"):
        await wake(ctx, gw, d, seq=4)  # both run the bad seq 4
    # re-adding the same bytes with a higher --version is refused with the way out
    f = tmp_path / "app-2.bin"
    line = error_line(await run(cc, gw, home, "firmware", "add", str(f), "--version", "9",
                                "--class", CLASS))
    assert "4.09" in line and f"cc rollback --to {good['id']}" in line
    camp = await run(cc_json, gw, home, "rollback", "--to", good["id"], "--device", "rb-1",
                     "--device", "rb-2", "--canary", "1")
    assert camp["image"] == good["id"] and [p["total"] for p in camp["phases"]] == [1, 1]
    [image] = [i for i in await run(cc_json, gw, home, "firmware", "list")
               if i["id"] == good["id"]]
    assert image["seq"] == 5  # one above the bad image and the devices
    cmds = {d: await wake(ctx, gw, d, seq=4) for d in ("rb-1", "rb-2")}
    [(first, cmd)] = [(d, c) for d, c in cmds.items() if c.get(CmdKey.OP) == Op.UPDATE]
    m = manifest.parse(cmd[CmdKey.MANIFEST])
    assert m[ManifestKey.SEQ] == 5 and m[ManifestKey.DIGEST].hex() == good["digest"]
    await wake(ctx, gw, first, seq=5, result=Result.SUCCESS, job=cmd[CmdKey.JOB])
    [second] = {"rb-1", "rb-2"} - {first}
    cmd = await wake(ctx, gw, second, seq=4)
    assert cmd[CmdKey.OP] == Op.UPDATE  # the canary passed: the next phase goes
    # a running campaign keeps its manifest: superseding its image is refused meanwhile
    line = error_line(await run(cc, gw, home, "firmware", "add", str(f), "--version", "7",
                                "--class", CLASS, "--supersede"))
    assert "4.09" in line and f"campaign(s) {camp['id']}" in line
    await wake(ctx, gw, second, seq=5, result=Result.SUCCESS, job=cmd[CmdKey.JOB])
    done = await run(cc, gw, home, "status", "--watch", str(camp["id"]))
    assert done.returncode == 0 and "all 2 job(s) succeeded" in done.stdout
    # --supersede with an explicit seq: lower than the current one is refused
    line = error_line(await run(cc, gw, home, "firmware", "add", str(f), "--version", "3",
                                "--class", CLASS, "--supersede"))
    assert "needs a higher seq" in line
    again = await run(cc_json, gw, home, "firmware", "add", str(f), "--version", "8", "--class",
                      CLASS, "--supersede")
    assert (again["id"], again["seq"]) == (good["id"], 8)
    assert bad["id"] != good["id"]


def test_labels_and_release_notes_are_listed(gw, home, tmp_path):
    notes = tmp_path / "NOTES.txt"
    notes.write_text("Fixes the watchdog reset.\nSecond line.\n")
    f = tmp_path / "labelled.bin"
    f.write_bytes(b"labelled" * 64)
    image = cc_json(gw, home, "firmware", "add", str(f), "--version", "3", "--class", CLASS,
                    "--label", "1.4.0", "--notes", str(notes))
    assert (image["label"], image["notes"]) == ("1.4.0", notes.read_text())
    listed = cc(gw, home, "firmware", "list").stdout.splitlines()
    header = listed[0].split("\t")
    [row] = [r.split("\t") for r in listed if r.startswith(image["id"])]
    assert row[header.index("label")] == "1.4.0"
    assert row[header.index("notes")] == "Fixes the watchdog reset. …"
    notes.write_text("x" * 3000)
    line = error_line(cc(gw, home, "firmware", "add", str(f), "--version", "3", "--class",
                         CLASS, "--notes", str(notes)))
    assert "limited to 2048" in line


async def test_devices_rm_and_firmware_rm(gw, home, tmp_path, coap_client):
    ctx = coap_client
    image = await run(add_image, gw, home, tmp_path, b"to be removed" * 90, 2)
    for d in ("old-1", "old-2", "busy-1"):
        await wake(ctx, gw, d, seq=1)
    camp = await run(cc_json, gw, home, "upgrade", image["id"], "--device", "old-1")
    cmd = await wake(ctx, gw, "old-1", seq=1)
    await wake(ctx, gw, "old-1", seq=2, result=Result.SUCCESS, job=cmd[CmdKey.JOB])
    running = await run(cc_json, gw, home, "upgrade", image["id"], "--device", "busy-1")
    # one refusal (an unfinished job) does not stop the others; it is the one error line
    out = await run(cc, gw, home, "devices", "rm", "old-1", "busy-1", "old-2", "ghost")
    line = error_line(out)
    assert "busy-1" in line and "4.09" in line and f"campaign {running['id']}" in line
    assert "ghost" in line and "4.04" in line
    assert "old-1 removed with 1 finished job(s)" in out.stdout
    listed = {d["id"] for d in await run(cc_json, gw, home, "devices")}
    assert {"old-1", "old-2"}.isdisjoint(listed) and "busy-1" in listed
    log = await run(cc_json, gw, home, "events")
    assert any(e["device"] == "old-1" and e["kind"] == "registered" for e in log)  # kept
    assert any(e["device"] == "old-1" and e["kind"] == "removed" for e in log)
    # firmware rm: refused while a campaign runs; then the image, its finished campaigns
    # and its blob go
    line = error_line(await run(cc, gw, home, "firmware", "rm", image["id"]))
    assert "4.09" in line and str(running["id"]) in line
    await run(cc, gw, home, "cancel", str(running["id"]))
    blob = gw.data / "blobs" / image["digest"]
    assert blob.is_file()
    out = await run(cc, gw, home, "firmware", "rm", image["id"])
    assert out.returncode == 0 and "blob deleted" in out.stdout
    assert f"{camp['id']}, {running['id']}" in out.stdout
    assert not blob.exists()
    assert image["id"] not in {i["id"] for i in await run(cc_json, gw, home, "firmware", "list")}
    line = error_line(await run(cc, gw, home, "status", str(camp["id"])))
    assert "4.04" in line
    resp = await asyncio.wait_for(ctx.request(Message(
        code=GET, uri=gw.device_uri + image["uri"])).response, 10)
    assert resp.code.dotted == "4.04"


async def test_backup_while_running_restores_and_serves(gw, home, tmp_path, coap_client):
    data = b"backed up" * 500
    image = await run(add_image, gw, home, tmp_path, data, 3)
    await run(cc, gw, home, "devices", "add", "kept-1", "--class", CLASS, "--key")
    archive = tmp_path / "fota.tar"
    out = await run(cc, gw, home, "backup", str(archive), "--data", str(gw.data))
    assert out.returncode == 0, out.stderr
    assert archive.stat().st_mode & 0o077 == 0  # it holds device keys
    # the data directory is the gateway's alone: a second gateway on it refuses, one line
    code, text = run_gateway_once(["run", "--data", str(gw.data), "--bind",
                                   f"127.0.0.1:{free_udp_port()}", "--control-bind",
                                   f"127.0.0.1:{free_udp_port()}"])
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "in use by another gateway" in lines[0], text
    restored = tmp_path / "restored"
    restored.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(restored, filter="data")
        # every blob, the deflated variant of this compressible image included
        blobs = {f"blobs/{b.name}" for b in (gw.data / "blobs").iterdir() if b.is_file()}
        assert len(blobs) >= 2 and blobs <= set(tar.getnames()), (blobs, tar.getnames())
    g2 = GatewayProc(restored).start()
    try:
        listed = await run(cc_json, g2, home, "devices")
        assert [d["id"] for d in listed if d["id"] == "kept-1"] == ["kept-1"]
        assert image["id"] in {i["id"] for i in await run(cc_json, g2, home, "firmware", "list")}
        got = b""
        for num in range(100):  # bounded: the image is 5 blocks
            resp = await asyncio.wait_for(coap_client.request(Message(
                code=GET, uri=g2.device_uri + image["uri"],
                block2=(num, False, 6))).response, 10)
            got += resp.payload
            if not resp.opt.block2.more:
                break
        assert got == data
    finally:
        g2.stop()


def test_config_profiles_and_precedence(gw, home, tmp_path):
    """Flags beat environment variables, which beat the profile, which beats the defaults."""
    from typer.testing import CliRunner

    from cc.main import app

    dead = f"coap://127.0.0.1:{free_udp_port()}"  # nobody answers there
    cfg = tmp_path / "cc.toml"
    cfg.write_text(f'profile = "lab"\n[profiles.lab]\ngateway = "{gw.control_uri}"\n'
                   f'home = "{home}"\n[profiles.dead]\ngateway = "{dead}"\nhome = "{home}"\n')

    def cc_with(*args: str, **env: str):
        r = CliRunner().invoke(app, ["--config", str(cfg), *args], env=env)
        return r.exit_code, r.stdout + r.stderr

    assert cc_with("devices", "--json")[0] == 0  # the file's default profile: lab
    code, out = cc_with("--profile", "dead", "devices")
    assert code == 2 and dead.split("//")[1] in out
    assert cc_with("--profile", "dead", "devices", FOTA_GATEWAY=gw.control_uri)[0] == 0
    assert cc_with("--gateway", gw.control_uri, "devices", FOTA_GATEWAY=dead)[0] == 0
    assert cc_with("devices", FOTA_PROFILE="dead")[0] == 2
    code, out = cc_with("--profile", "nope", "devices")
    assert code == 2 and "no profile 'nope'" in out and "dead, lab" in out
    cfg.write_text('[profiles.default]\ngatway = "x"\n')
    code, out = cc_with("devices")
    assert code == 2 and "unknown key(s) gatway" in out and len(out.strip().splitlines()) == 1


def test_device_text_is_printed_as_it_is(gw, home):
    out = cc(gw, home, "devices", "add", "[red]x", "--class", "[b]c", "--key")
    assert out.returncode == 0, out.stderr
    assert "device [red]x added, class [b]c" in out.stdout
    assert "device-keys/[red]x.key" in out.stdout
    shown = cc(gw, home, "device", "show", "[red]x").stdout
    assert "[red]x" in shown and "[b]c" in shown
    assert cc(gw, home, "devices", "rm", "[red]x").returncode == 0
