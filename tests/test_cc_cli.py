"""cc without a gateway: the signing key, refusals, and fast one-line failures.

Real CLI both ways: typer's CliRunner in-process, and ``python -m cc`` as a subprocess where
exit codes, stderr lines and timing are what a shell script sees.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from harness import free_udp_port

from cc import keys
from cc.main import app
from proto import manifest

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def cc(home: Path, *args: str, gateway: str | None = None):
    opts = ["--home", str(home)] + (["--gateway", gateway] if gateway else [])
    return runner.invoke(app, [*opts, *args])


def cc_proc(home: Path, *args: str, gateway: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    opts = ["--home", str(home)] + (["--gateway", gateway] if gateway else [])
    return subprocess.run([sys.executable, "-m", "cc", *opts, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("cc: ")
    return lines[0]


def test_keys_init_writes_private_key_and_public_prints_it(tmp_path: Path):
    home = tmp_path / "fota"
    r = cc(home, "keys", "init")
    assert r.exit_code == 0, r.output
    key_file = home / keys.KEY_FILE
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    r = cc(home, "keys", "public")
    assert r.exit_code == 0
    public = r.stdout.strip()
    assert len(public) == 64 and bytes.fromhex(public)
    assert public == manifest.public_bytes(keys.load(home).public_key()).hex()
    shown = cc(home, "keys", "init", "--force").stdout
    new = cc(home, "keys", "public").stdout.strip()
    assert new != public and new in shown  # --force made a new key, and init showed it


def test_keys_init_refuses_to_overwrite(tmp_path: Path):
    assert cc(tmp_path, "keys", "init").exit_code == 0
    before = (tmp_path / keys.KEY_FILE).read_bytes()
    r = cc(tmp_path, "keys", "init")
    assert r.exit_code == 2
    assert "--force" in r.stderr
    assert (tmp_path / keys.KEY_FILE).read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int):
    assert cc(tmp_path, "keys", "init").exit_code == 0
    os.chmod(tmp_path / keys.KEY_FILE, mode)
    r = cc(tmp_path, "keys", "public")
    assert r.exit_code == 2
    assert "chmod 600" in r.stderr and f"{mode:04o}" in r.stderr
    assert r.stdout == ""


def test_no_key_yet(tmp_path: Path):
    home = tmp_path / "empty"
    image = tmp_path / "app.bin"
    image.write_bytes(b"x" * 100)
    for args in (["keys", "public"],
                 ["firmware", "add", str(image), "--version", "1", "--class", "c"]):
        r = cc_proc(home, *args)
        assert r.returncode == 2
        assert one_line_error(r.stderr) == f"cc: no signing key in {home}: run `cc keys init`"


def test_missing_and_empty_image_files(tmp_path: Path):
    assert cc(tmp_path, "keys", "init").exit_code == 0
    r = cc_proc(tmp_path, "firmware", "add", str(tmp_path / "nope.bin"), "--version", "1",
                "--class", "c")
    assert r.returncode == 2
    assert one_line_error(r.stderr) == f"cc: no such file: {tmp_path / 'nope.bin'}"
    (tmp_path / "empty.bin").write_bytes(b"")
    r = cc(tmp_path, "firmware", "add", str(tmp_path / "empty.bin"), "--version", "1",
           "--class", "c")
    assert r.exit_code == 2 and "empty" in r.stderr


def test_unreachable_gateway_fails_fast_with_one_line(tmp_path: Path):
    gateway = f"coap://127.0.0.1:{free_udp_port()}"
    for args in (["devices"], ["firmware", "list", "--json"], ["status", "3"]):
        r = cc_proc(tmp_path, *args, gateway=gateway)  # bounded by cc_proc's timeout
        assert r.returncode == 2, r
        assert one_line_error(r.stderr).startswith(f"cc: gateway {gateway} unreachable")
        assert r.stdout == ""


def test_silent_gateway_times_out_within_seconds(tmp_path: Path):
    """Something holds the port but never answers: aiocoap alone would retry for ~93 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        gateway = "coap://127.0.0.1:%d" % silent.getsockname()[1]
        r = cc_proc(tmp_path, "devices", "--json", gateway=gateway, timeout=30)  # not ~93 s
    assert r.returncode == 2
    assert "did not answer within 5 s" in one_line_error(r.stderr)


@pytest.mark.parametrize("gateway", ["http://127.0.0.1:5684", "coap://", "coap://h:99999",
                                     "coap://h:5684/fw"])
def test_bad_gateway_uri(tmp_path: Path, gateway: str):
    r = cc(tmp_path, "devices", gateway=gateway)
    assert r.exit_code == 2
    assert "bad gateway URI" in r.stderr


@pytest.mark.parametrize("targets", [[], ["--all", "--class", "c"], ["--device", "d", "--all"],
                                     ["--device", "d", "--tag", "t"], ["--all", "--tag", "t"]])
def test_upgrade_needs_exactly_one_target(tmp_path: Path, targets: list[str]):
    r = cc(tmp_path, "upgrade", "abcd1234", *targets, gateway=f"coap://127.0.0.1:{free_udp_port()}")
    assert r.exit_code == 2
    assert "choose the devices with --device" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--wave", "lots"], "--wave must be a count"),
    (["--max-failures", "-3"], "--max-failures must be a count"),
    (["--window", "0 2 * * *", "--window-duration", "soon"], "--window-duration must be"),
])
def test_upgrade_policy_options_checked_before_sending(tmp_path: Path, args, message):
    r = cc(tmp_path, "upgrade", "abcd1234", "--all", *args,
           gateway=f"coap://127.0.0.1:{free_udp_port()}")
    assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_gateway_from_environment(tmp_path: Path):
    gateway = f"coap://127.0.0.1:{free_udp_port()}"
    r = subprocess.run([sys.executable, "-m", "cc", "devices"], cwd=REPO, text=True,
                       capture_output=True, timeout=30,
                       env={**os.environ, "FOTA_GATEWAY": gateway, "FOTA_HOME": str(tmp_path)})
    assert r.returncode == 2
    assert gateway in r.stderr


def test_image_over_the_limit_is_refused_before_any_upload(tmp_path: Path):
    from proto.control import MAX_IMAGE

    assert cc(tmp_path, "keys", "init").exit_code == 0
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(MAX_IMAGE + 1)  # sparse: costs no disk
    r = cc(tmp_path, "firmware", "add", str(big), "--version", "1", "--class", "c",
           gateway=f"coap://127.0.0.1:{free_udp_port()}")  # nobody there: it must not get that far
    assert r.exit_code == 2
    assert f"at most {MAX_IMAGE} bytes" in r.stderr


@pytest.mark.parametrize("text, base", [
    ("coap://127.0.0.1:7000", "coap://127.0.0.1:7000"),
    ("coap://[::1]:7000", "coap://[::1]:7000"),
    ("coap://gw.example", "coap://gw.example:5684"),  # no port: the control port, not 5683
    ("coap://[::1]", "coap://[::1]:5684"),
])
def test_gateway_uri_normalised(text: str, base: str):
    from cc.settings import parse_gateway

    assert parse_gateway(text).base == base


def test_operations_doc_uses_only_real_commands_and_options():
    """Every `cc ...` line in the operations guide names a command and options that exist."""
    import shlex

    import typer

    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("## Control center (cc)"):]
    section = section.split("\n## ", 1)[0]
    lines = [ln.split("#")[0].strip() for ln in section.splitlines()]
    lines = [ln for ln in lines if ln.startswith("cc ")]
    assert len(lines) >= 10
    root = typer.main.get_command(app)
    for line in lines:
        tokens = shlex.split(line.replace("[", " ").replace("]", " "))[1:]
        cmd = root
        # Duck typing: typer's groups are not always instances of the installed click.Group.
        while hasattr(cmd, "commands") and tokens and tokens[0] in cmd.commands:
            cmd = cmd.commands[tokens.pop(0)]
        assert not hasattr(cmd, "commands") or cmd.invoke_without_command, line
        known = {o for p in cmd.params for o in p.opts}
        for t in tokens:
            if t.startswith("-"):
                assert t in known, f"{line}: {t} is not an option of {cmd.name}"


@pytest.mark.parametrize("script", ["cc", "fota-cc"])
def test_console_scripts_are_the_same_program(tmp_path: Path, script: str):
    """Both installed scripts (next to this interpreter: `cc` elsewhere on PATH is a compiler)."""
    exe = Path(sys.executable).parent / script
    assert exe.exists(), f"{exe} missing: pip install -e '.[test]'"
    assert cc(tmp_path, "keys", "init").exit_code == 0
    r = subprocess.run([str(exe), "--home", str(tmp_path), "keys", "public"], text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == cc(tmp_path, "keys", "public").stdout.strip()
