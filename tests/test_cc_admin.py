"""Issue 9, rollback and clean-up through the real cc and a real gateway (one gateway for the
module; ids unique per test): `cc rollback --to IMAGE`, `cc firmware add --supersede`, labels
and release notes, `cc devices rm`, `cc firmware rm`, `cc backup` restored and served, the data
directory lock.
"""

from __future__ import annotations

from ccfleet import gw, home, run, wake  # noqa: F401 (gw, home: fixtures)
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
