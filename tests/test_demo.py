"""``fota-demo`` end to end: gateway, cc, 5 simulated devices, exit 0 within a minute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo_command() -> list[str]:
    script = Path(sys.executable).parent / "fota-demo"
    if script.exists():
        return [str(script)]
    found = shutil.which("fota-demo")
    return [found] if found else [sys.executable, "-m", "sim.demo"]


def test_demo_exits_zero(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "100"}
    t0 = time.monotonic()
    p = subprocess.run(demo_command(), cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all devices confirmed seq 2" in p.stdout, p.stdout
    assert p.stdout.count("demo-00") >= 5  # the final table names every device
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"
    print(f"\nfota-demo: exit 0 in {elapsed:.1f} s")
