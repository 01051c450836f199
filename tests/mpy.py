"""Run Python under the MicroPython WebAssembly port (npm @micropython/micropython-webassembly-pyscript).

API for tests::

    from mpy import run_mpy, mpy_available
    out = run_mpy("import device.cbor as c; print(c.dumps([1]).hex())")   # -> "810" + "1\\n"
    out = run_mpy(code, timeout=60, heap="4m", libs=(extra_dir,), js={"name": "mod.mjs"})

``run_mpy`` runs ``node tests/wasm/run.mjs`` with ``code`` on stdin and returns its stdout. The
repo's ``device/`` package is importable as ``device`` (copied to /lib/device), and so is every
module in ``tests/wasm/lib/`` (``fakelink``: an in-process lossy CoAP link with a virtual clock
and a Block2 server; see its docstring) plus every ``.py`` in each of ``libs``. An uncaught
Python exception (or ``sys.exit(n)`` with n != 0, or the timeout) fails the test with the
traceback. ``js`` maps module names to ES module files, registered with ``registerJsModule``
(Python then ``import name`` and calls its exports; the runtime is single-threaded, so a JS
function must not block). The runner itself: ``node tests/wasm/run.mjs --help`` style flags
documented at its top (``--heap``, ``--lib DIR``, ``--js NAME=FILE.mjs``, ``FILE.py`` or ``-``).
Real UDP under wasm: ``run_mpy(code, js={"udpbridge": UDP_BRIDGE})`` and, in ``code``,
``import jsudp; link = jsudp.JsUdpLink(host, port, timeout_scale=0.25)`` — a blocking
``Link.request`` (a worker thread owns a Node ``dgram`` socket; ``recv`` blocks on
``Atomics.wait``), so ``coap.run(agent_generator, link)`` works unchanged, IPv4 or ::1.

Without node or ``node_modules`` the test is skipped, except when ``CI=true``: then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "wasm" / "run.mjs"
UDP_BRIDGE = ROOT / "tests" / "wasm" / "udpbridge.mjs"
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


def mpy_available() -> str | None:
    """None when the wasm port can run, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PACKAGE / "micropython.mjs").exists():
        return "run `npm install` in the repo root (MicroPython WebAssembly port missing)"
    return None


def _require() -> None:
    why = mpy_available()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)


def run_mpy(code: str, timeout: float = 60, heap: str = "4m", libs: tuple = (),
            js: dict | None = None) -> str:
    _require()
    cmd = ["node", str(RUNNER), "--heap", heap, "--lib", str(ROOT / "tests" / "wasm" / "lib")]
    for lib in libs:
        cmd += ["--lib", str(lib)]
    for name, path in (js or {}).items():
        cmd += ["--js", f"{name}={path}"]
    cmd.append("-")
    try:
        p = subprocess.run(cmd, input=code, capture_output=True, text=True, timeout=timeout,
                           cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"MicroPython run timed out after {timeout} s: {e.stdout!r}") from None
    if p.returncode != 0:
        raise AssertionError(f"MicroPython failed (exit {p.returncode}):\n{p.stderr}\n--- stdout:\n{p.stdout}")
    return p.stdout
