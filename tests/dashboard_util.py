"""Helpers for the dashboard tests: a gateway with ``--http``, the real cc, fota-sim, and
the operator token made by ``fota-gateway web-token``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


class SyncOps:
    """The operator's cc (real, a subprocess) with its own FOTA_HOME."""

    def __init__(self, gw: GatewayProc, home: Path) -> None:
        self.env = {**os.environ, "FOTA_HOME": str(home), "FOTA_GATEWAY": gw.control_uri}

    def cc(self, *args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cc", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def json(self, *args: str) -> Any:
        p = self.cc(*args, "--json")
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return json.loads(p.stdout)
