"""The operator in tests: the real ``cc`` (``python -m cc``, a subprocess) with its own
FOTA_HOME, synchronous. One class for every test that drives ``cc`` (tests/upy.py re-exports
it; test_agent_e2e.Ops is its async face).

    cc = CC(gateway, tmp_path)            # home: tmp_path / "cc-home"
    p = cc.run("status")                  # subprocess.CompletedProcess
    out = cc.ok("keys", "init")           # stdout, asserting exit 0
    cc.json("devices")                    # any `cc ... --json`
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import REPO


class CC:
    """The operator: the real ``cc`` (``python -m cc``) with its own home, synchronous."""

    def __init__(self, gw: Any, tmp: Path) -> None:
        self.gw = gw
        self.tmp = Path(tmp)
        self.env = {**os.environ, "FOTA_HOME": str(self.tmp / "cc-home"),
                    "FOTA_GATEWAY": gw.control_uri}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cc", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> str:
        p = self.run(*args, timeout=timeout)
        assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
        return p.stdout

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.ok(*args, "--json", timeout=timeout))

    def keys(self) -> str:
        self.ok("keys", "init")
        return self.ok("keys", "public").strip()

    def firmware(self, image: Path | bytes, *, seq: int, device_class: str) -> dict[str, Any]:
        if isinstance(image, bytes):
            path = self.tmp / f"image-{seq}-{len(image)}.bin"
            path.write_bytes(image)
            image = path
        return self.json("firmware", "add", str(image), "--version", str(seq),
                         "--class", device_class)

    def upgrade(self, image_id: str, *devices: str, defer: int = 1) -> dict[str, Any]:
        """A campaign for ``devices``; ``defer``: seconds a deferred (or out-of-RAM) device
        waits before the job is offered again (1: tests do not wait the default minute)."""
        args = [a for d in devices for a in ("--device", d)]
        return self.json("upgrade", image_id, *args, "--defer", str(defer))

    def job(self, device: str) -> dict[str, Any]:
        camps = self.json("status")
        camp = self.json("status", str(camps[-1]["id"]))
        (job,) = [j for j in camp["jobs"] if j["device"] == device]
        return job
