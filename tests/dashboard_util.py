"""Helpers for the dashboard tests: the address of a gateway's ``--http`` and the operator
token made by ``fota-gateway web-token`` (the real cc: tests/ccproc.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness import REPO, GatewayProc

HTTP = re.compile(r"http=(\S+):(\d+) ")


def web_token(data: Path, name: str) -> str:
    p = subprocess.run([sys.executable, "-m", "gateway", "web-token", name, "--data", str(data)],
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def http_base(gw: GatewayProc) -> str:
    m = HTTP.search(gw.log_text())
    assert m, gw.log_text()
    return f"http://{m.group(1)}:{m.group(2)}"
