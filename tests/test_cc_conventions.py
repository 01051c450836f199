"""Issue 9, conventions: shell completion, --help without markup, the docs' command lines, the
systemd unit (hardening checked by `systemd-analyze security --offline`)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import typer
from typer.testing import CliRunner

from cc.main import app

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "docs" / "fota-gateway.service"
MAX_EXPOSURE = 4.0


def commands(cmd, path=()):
    """Every (path, click command) of the cc tree."""
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_every_help_renders_without_markup():
    root = typer.main.get_command(app)
    seen = 0
    for path, _ in commands(root):
        r = CliRunner().invoke(app, [*path, "--help"], terminal_width=80)
        assert r.exit_code == 0, (path, r.output)
        for mark in ("`", "**", "\\b", "[bold]", "[/]"):
            assert mark not in r.output, (path, mark, r.output)
        seen += 1
    assert seen >= 25


def test_shell_completion_is_on():
    r = CliRunner().invoke(app, [], prog_name="cc",
                           env={"_CC_COMPLETE": "complete_bash", "COMP_WORDS": "cc firmware ",
                                "COMP_CWORD": "2"})
    assert r.exit_code == 0 and {"add", "list", "rm"} <= set(r.stdout.split()), r.output
    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).output


def test_docs_never_pipe_one_cc_into_another():
    """A line pasted from the docs runs one command (`cc pause 4 | cc resume 4` ran four)."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            code = line.split("#")[0]
            assert not re.search(r"\|\s*(cc|fota-\w+)\s", code), f"{doc.name}: {line}"


def unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_matches_the_readme_and_is_hardened(tmp_path):
    u = unit()
    argv = shlex.split(u["ExecStart"][0])
    assert argv[0].endswith("/.venv/bin/fota-gateway")  # the venv scripts/setup makes
    readme_data = re.search(r"fota-gateway run --data (\S+)", (REPO / "README.md").read_text())
    assert readme_data and argv[argv.index("--data") + 1] == readme_data.group(1)
    assert u["StateDirectory"] == [Path(readme_data.group(1)).name]
    assert u["DynamicUser"] == ["yes"] and "User" not in u  # no useradd needed
    assert u["UMask"] == ["0077"] and u["StateDirectoryMode"] == ["0700"]
    doc = u["Documentation"][0]
    assert doc.endswith("/docs/operations.md") and (REPO / "docs" / "operations.md").exists()
    assert u["RestartPreventExitStatus"] == ["2"]
    copy = tmp_path / UNIT.name  # systemd-analyze wants a unit file name it can load
    copy.write_text(UNIT.read_text())
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(copy)],
                       capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert level, r.stdout + r.stderr
    assert float(level.group(1)) <= MAX_EXPOSURE, r.stdout
