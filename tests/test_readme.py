"""The README's two commands work exactly as written, on a clean clone, and CI runs the second."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The one-line commands in the README's fenced blocks that start with scripts/setup."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^(scripts/setup && .+)$", text, re.M)


def test_readme_has_a_demo_and_a_test_command() -> None:
    demo, tests = readme_commands()
    assert demo == "scripts/setup && .venv/bin/fota-demo"
    assert tests.startswith("scripts/setup && .venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_as_written() -> None:
    _, tests = readme_commands()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "CI must run the README's test command exactly as written"


def test_setup_never_installs_into_the_system_python() -> None:
    setup = (REPO / "scripts" / "setup").read_text()
    pip_lines = [ln for ln in setup.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert pip_lines and all('"$VENV/bin/python" -m pip' in ln for ln in pip_lines), pip_lines


def test_readme_commands_in_a_clean_clone(tmp_path: Path) -> None:
    """Clone main's working tree, run both README commands there (the test command narrowed to
    one small module so the suite does not recurse), with no environment activated."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    # the working tree as it is now (uncommitted edits included), so the test checks this code
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            dst = clone / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "FOTA_VENV")}
    venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", "/nonexistent")) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["TMPDIR"] = str(tmp_path)
    demo, tests = readme_commands()
    p = subprocess.run(["bash", "-c", demo], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "setup: " in p.stdout and "all devices confirmed" in p.stdout
    assert (clone / ".venv" / "bin" / "fota-demo").exists()
    p = subprocess.run(["bash", "-c", tests + " tests/test_proto.py -p no:cacheprovider"], cwd=clone,
                       env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert re.search(r"\d+ passed", p.stdout), p.stdout[-2000:]
