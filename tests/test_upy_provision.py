"""``cc devices provision`` and ``cc firmware add DIR`` through the real ``cc``, the board
directory run as it is on the real MicroPython unix port; app bundles: their format, unpacking
without a half app, and what the device refuses."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from cc import bundle
from cc.provision import compile_agent
from device.slots import FileSlots
from proto.codes import Result, State
from upy import CC, MICROPYTHON, Board, make_app

CLASS = "upy-prov"


def test_provision_writes_a_board_that_updates_from_an_app_directory(gateway, tmp_path: Path) -> None:
    cc = CC(gateway, tmp_path)
    trust = cc.keys()
    out = tmp_path / "board"
    info = cc.json("devices", "provision", "prov-1", "--class", CLASS, "--gateway",
                   f"127.0.0.1:{gateway.device_port}", "--out", str(out), "--key")
    assert info["key"] is True and "mpy" in info["mpy_cross"]
    cfg = json.loads((out / "fota.json").read_text())
    assert (cfg["id"], cfg["class"], cfg["trust"], cfg["gateway"], cfg["port"]) == (
        "prov-1", CLASS, [trust], "127.0.0.1", gateway.device_port)
    assert len(cfg["key"]) == 64 and cfg["slots"] == "files" and cfg["bundles"] is True
    fw_file = tmp_path / "cc-home" / "device-keys" / "prov-1.fw"  # the firmware key: cc + board
    assert info["fw_key"] is True and cfg["fw_key"] == fw_file.read_text().strip()
    assert not any(str(v).startswith("/") for v in cfg.values() if isinstance(v, str))
    assert sorted(p.name for p in (out / "fota").iterdir()) == sorted(  # const.py is folded in
        p.stem + ".mpy" for p in (Path(__file__).parent.parent / "device").glob("*.py")
        if p.name != "const.py")
    assert (out / "slots" / "a" / "app.py").exists() and (out / "slots" / "a.bin").exists()
    (row,) = [d for d in cc.json("devices") if d["id"] == "prov-1"]  # enrolled before it reports
    assert row["class"] == CLASS
    board = Board(out)
    board.set_config(wake_s=0.05, ack_timeout_ms=300)
    r = board.power_on(wakes=1)
    assert not r.crashed and "app: version 1" in r.out, r  # the factory app, from slot a
    img = cc.json("firmware", "add", str(make_app(tmp_path / "v2", version=2)), "--version", "2",
                  "--class", CLASS, "--encrypt")  # wrapped for prov-1's firmware key
    assert img["size"] % 512 == 0 and img["encrypted"]  # a tar stream, encrypted
    cc.upgrade(img["id"], "prov-1")
    runs = board.run_until(lambda b: b.state().get("seq") == 2 and not b.state().get("unsent"),
                           power_ons=4, wakes=8)
    assert not any(r.crashed for r in runs), runs
    assert "app: version 2 util-2" in runs[-1].out
    assert cc.job("prov-1")["result"] == "success"


def test_provision_refuses_a_used_directory_before_enrolling(gateway, tmp_path: Path) -> None:
    cc = CC(gateway, tmp_path)
    cc.keys()
    out = tmp_path / "used"
    out.mkdir()
    (out / "x").write_text("keep me")
    p = cc.run("devices", "provision", "prov-2", "--class", CLASS, "--gateway", "gw:5683",
               "--out", str(out))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not an empty directory" in p.stderr
    assert (out / "x").read_text() == "keep me"
    assert "prov-2" not in {d["id"] for d in cc.json("devices")}


def test_the_same_directory_runs_as_documented_on_the_unix_port(tmp_path: Path) -> None:
    """No gateway needed to start: `micropython boot.py` then `micropython main.py` in DIR."""
    from cc.provision import write_board

    write_board(tmp_path / "b", {"id": "x", "class": "c", "trust": ["00" * 32],
                                 "gateway": "127.0.0.1", "port": 9, "wakes": 1, "wake_s": 0,
                                 "ack_timeout_ms": 10, "max_failures": 1})
    for script in ("boot.py", "main.py"):
        p = subprocess.run([MICROPYTHON, script], cwd=tmp_path / "b", capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p
    assert "app: version 1" in p.stdout


@pytest.mark.parametrize("lines", [False, True])
def test_agent_line_numbers_only_when_asked(tmp_path: Path, lines: bool) -> None:
    """Line tables cost heap (the code's home on a board): off by default, ``--lines`` keeps
    them; a traceback names the file and the function either way."""
    compile_agent(tmp_path / "fota", lines=lines)
    p = subprocess.run([MICROPYTHON, "-c", "from fota import coap; coap.decode(b'')"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=30)
    line = 1 + next(i for i, s in enumerate(
        (Path(__file__).parent.parent / "device" / "coap.py").read_text().splitlines())
        if 'raise CoapError("shorter than a header")' in s)
    out = p.stdout + p.stderr  # MicroPython prints the traceback on stdout
    assert "CoapError: shorter than a header" in out
    assert f'File "fota/coap.py", line {line if lines else 1}, in decode' in out


def test_bundle_is_deterministic_ustar_and_refuses_links(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", version=3, extra={"data/x.bin": bytes(700)})
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    a = bundle.pack(app)
    (app / "app.py").touch()  # a new mtime changes nothing
    assert bundle.pack(app) == a
    with tarfile.open(fileobj=__import__("io").BytesIO(a)) as t:
        names = t.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in t.getmembers())
    assert names == ["app.py", "applib", "applib/__init__.py", "applib/util.py", "data",
                     "data/x.bin"]
    (app / "link").symlink_to(app / "app.py")
    with pytest.raises(bundle.BundleError, match="only regular files"):
        bundle.pack(app)


def test_unpacking_again_after_a_cut_leaves_exactly_the_bundle(tmp_path: Path) -> None:
    """A power cut while set_pending unpacks: the slot directory holds part of the app (and
    leftovers of an older one) and nothing is pending. Installing again restarts the unpack."""
    app = make_app(tmp_path / "app", version=2, extra={f"m{i}.py": b"x = %d\n" % i for i in range(20)})
    slots = FileSlots(str(tmp_path / "slots"), bundles=True)
    slots.open(10**6)
    slots.write(bundle.pack(app))
    half = Path(slots.app_dir("b"))
    (half / "applib").mkdir(parents=True)
    (half / "applib" / "util.py").write_text("NAME = 'trunc")  # cut mid-file
    (half / "stale.py").write_text("old = 1\n")
    assert slots.next_boot() == "a"  # nothing pending: the half app can never boot
    slots.set_pending()
    got = sorted(str(p.relative_to(half)) for p in half.rglob("*"))
    assert got == sorted(str(p.relative_to(app)) for p in app.rglob("*"))
    assert (half / "applib" / "util.py").read_text() == "NAME = 'util-2'\n"
    assert slots.next_boot() == "b"


def test_a_bundle_that_climbs_out_is_refused_by_the_device(tmp_path: Path) -> None:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("../escape.py")
        info.size = 3
        t.addfile(info, io.BytesIO(b"x=1"))
    slots = FileSlots(str(tmp_path / "slots"), bundles=True)
    slots.open(10**6)
    slots.write(buf.getvalue())
    with pytest.raises(ValueError, match="bad name"):
        slots.set_pending()
    assert slots.next_boot() == "a" and not (tmp_path / "slots" / "escape.py").exists()
    assert State.IDLE == 0 and Result.UNSUPPORTED_IMAGE == 6


def test_esp32_slots_put_the_compiled_app_beside_main(tmp_path: Path) -> None:
    from cc.provision import write_board

    app = make_app(tmp_path / "app", version=1, extra={"data/cfg.txt": b"k=v\n"})
    cfg = write_board(tmp_path / "b", {"id": "e", "class": "c", "trust": ["00" * 32],
                                       "gateway": "10.0.0.1", "port": 5683}, app=app, slots="esp32")
    root = tmp_path / "b"
    assert cfg["slots"] == "esp32" and "bundles" not in cfg and not (root / "slots").exists()
    assert (root / "app.mpy").read_bytes()[:1] == b"M"  # compiled, as the agent is
    assert (root / "applib" / "util.mpy").exists() and (root / "data" / "cfg.txt").read_text() == "k=v\n"
    assert json.loads((root / "fota.json").read_text()) == cfg
