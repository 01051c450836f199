"""The agent on the real MicroPython unix port: a provisioned board directory run as processes.

A ``Board`` is a directory written by ``cc.provision.write_board`` (the same code as
``cc devices provision``): ``fota/*.mpy`` compiled by mpy-cross, ``boot.py``, ``main.py``,
``fota.json``, the factory app in ``slots/a``. A power-on is what a board does: ``micropython
boot.py`` then ``micropython main.py`` in that directory, each a real process with its own real
UDP socket to the real gateway (``tests/harness.py``), under ``-X heapsize=<heap>``. The number
of wakes per power-on is bounded by the ``wakes`` config key; a reboot is exit status
``REBOOT_EXIT`` (75), after which the next ``power_on`` plays the restart.

API (stable; other test modules and bench/ depend on it)::

    from upy import CC, Board, HEAP_BUDGET, MICROPYTHON, REBOOT_EXIT
    cc = CC(gateway, tmp_path)            # the real `cc` (subprocess), own FOTA_HOME, sync
    trust = cc.keys()                     # `cc keys init` + `cc keys public` -> 64 hex chars
    img = cc.firmware(path_or_bytes, seq=2, device_class="upy")   # `cc firmware add --json`
    cc.upgrade(img["id"], "dev-1")        # `cc upgrade ID --device dev-1 --defer 1 --json`
    cc.job("dev-1")                       # that device's job in the last campaign (dict)
    cc.json("devices")                    # any `cc ... --json`
    app = make_app(tmp_path / "app2", version=2, self_test=True)   # an app directory

    board = Board.provision(tmp_path / "board", gateway, "dev-1", "upy", trust,
                            heap="64k", key=None, app=None, version=1, ack_timeout_ms=300)
    r = board.power_on(wakes=3)           # boot.py + main.py; Run(rc, out, err, reboot)
    runs = board.run_until(lambda b: b.state()["result"] == 1, power_ons=4, wakes=6)
    p = board.start(wakes=50)             # main.py as a Popen (boot.py already run): kill -9 it
    board.wait_for(lambda b: b.slot_size("b") > 20000, p)   # bounded poll while it runs
    board.kill(p)                         # SIGKILL
    board.kill_mid_download(32768, lambda b: b.state().get("offset", 0) >= 16384)
    #   main.py behind a Relay that drops the blocks from 32 KiB on; kill -9 once cond holds
    board.state()                         # fota_state.json as a dict ({} if absent)
    board.boot_record()                   # slots/boot.json
    board.running()                       # "a" or "b" (as the bootloader sees it now)
    board.slot_size("b"), board.app_text("b", "app.py")
    board.config / board.set_config(**changes)   # fota.json

``Run.crashed`` is True when MicroPython printed a traceback (any ``Traceback`` on stderr or
stdout) or ended with a status other than 0 and ``REBOOT_EXIT``: tests assert it is False.
Every process has a timeout (``timeout`` argument, 60 s default) and is killed past it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cc.provision import write_board  # noqa: E402
from ccproc import CC  # noqa: E402,F401  (this module's API: tests and bench/ import it from here)

MICROPYTHON = str(Path(sys.executable).parent / "micropython")
#: The heap a full update of the .mpy agent must fit in: the issue's 64 KiB (64-bit unix port;
#: test_upy_agent.py enforces it). Measured minimum 61.75-62 KiB for main.py with its app and
#: bundles (bench/heapbudget.py), 60.5 with bench/footprint.py's driver (docs/device.md); the
#: windowed download's state and the heap's fragmentation depend on timing, so the budget
#: keeps a margin over it.
HEAP_BUDGET = "64k"
REBOOT_EXIT = 75  # device.board.REBOOT_EXIT (a test checks they agree)


@dataclass
class Run:
    rc: int
    out: str
    err: str

    @property
    def reboot(self) -> bool:
        return self.rc == REBOOT_EXIT

    @property
    def crashed(self) -> bool:
        return "Traceback" in self.out + self.err or self.rc not in (0, REBOOT_EXIT)


def make_app(root: Path, *, version: int, self_test: bool | None = True,
             extra: dict[str, bytes] | None = None) -> Path:
    """An app directory: ``app.py`` (prints its version; ``self_test()`` returns
    ``self_test``), a package ``lib/`` with a module, and ``extra`` files (name -> bytes)."""
    root = Path(root)
    (root / "applib").mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(
        f"import applib.util\nVERSION = {version}\nprint('app: version', VERSION, "
        f"applib.util.NAME)\n\n\ndef self_test():\n    return {self_test!r}\n")
    (root / "applib" / "__init__.py").write_text("")
    (root / "applib" / "util.py").write_text(f"NAME = 'util-{version}'\n")
    for name, data in (extra or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


class Board:
    def __init__(self, root: Path, heap: str = "256k") -> None:
        self.root = Path(root)
        self.heap = heap

    @classmethod
    def provision(cls, root: Path, gw: Any, device_id: str, device_class: str,
                  trust: list[str] | str, *, heap: str = "256k", app: Path | None = None,
                  slots: str = "files", **config: Any) -> Board:
        cfg = {"id": device_id, "class": device_class,
               "trust": [trust] if isinstance(trust, str) else list(trust),
               "gateway": "127.0.0.1", "port": gw.device_port, "version": 1,
               "wake_s": 0.05, "ack_timeout_ms": 300, "confirm_s": 30, **config}
        write_board(Path(root), cfg, app=app, slots=slots)
        return cls(root, heap)

    # -- the files ---------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.root / "fota.json").read_text())

    def set_config(self, **changes: Any) -> None:
        cfg = self.config
        for k, v in changes.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        (self.root / "fota.json").write_text(json.dumps(cfg, indent=1))

    def _json(self, rel: str) -> dict[str, Any]:
        for p in (self.root / rel, self.root / (rel + ".tmp")):
            try:
                return json.loads(p.read_text())
            except (FileNotFoundError, ValueError):
                continue
        return {}

    def state(self) -> dict[str, Any]:
        return self._json(self.config.get("state", "fota_state.json"))

    def slots_dir(self) -> Path:
        return self.root / self.config.get("slots_dir", "slots")

    def boot_record(self) -> dict[str, Any]:
        return self._json(str(self.slots_dir().relative_to(self.root) / "boot.json")) or {
            "active": "a", "pending": None, "tried": False}

    def running(self) -> str:
        b = self.boot_record()
        return b["pending"] if b["pending"] and b["tried"] else b["active"]

    def slot_size(self, name: str) -> int:
        p = self.slots_dir() / f"{name}.bin"
        return p.stat().st_size if p.exists() else 0

    def app_text(self, slot: str, name: str) -> str:
        return (self.slots_dir() / slot / name).read_text()

    # -- processes ---------------------------------------------------------------------------
    def command(self, script: str, heap: str | None = None) -> list[str]:
        return [MICROPYTHON, "-X", f"heapsize={heap or self.heap}", script]

    def _run(self, script: str, timeout: float, heap: str | None) -> Run:
        try:
            p = subprocess.run(self.command(script, heap), cwd=self.root, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{script} ran past {timeout} s: {e.stdout!r} {e.stderr!r}") from None
        return Run(p.returncode, p.stdout, p.stderr)

    def power_on(self, wakes: int = 3, timeout: float = 60, heap: str | None = None) -> Run:
        """``boot.py`` then ``main.py`` with at most ``wakes`` wakes; the main.py run (the
        boot.py output is prepended to its ``out``)."""
        self.set_config(wakes=wakes)
        b = self._run("boot.py", timeout, heap)
        if b.crashed:
            return b
        r = self._run("main.py", timeout, heap)
        return Run(r.rc, b.out + r.out, b.err + r.err)

    def run_until(self, done: Callable[[Board], bool], power_ons: int = 4, wakes: int = 6,
                  timeout: float = 60, heap: str | None = None) -> list[Run]:
        """Power on until ``done(board)`` holds after a run (at most ``power_ons`` times);
        stops at the first crash. Returns the runs."""
        runs: list[Run] = []
        for _ in range(power_ons):
            r = self.power_on(wakes, timeout, heap)
            runs.append(r)
            if r.crashed or done(self):
                break
        return runs

    def start(self, wakes: int = 50, heap: str | None = None, boot: bool = True) -> subprocess.Popen[str]:
        """Run boot.py to completion (unless ``boot`` is False), then start main.py and return
        its process (stop it with ``kill`` or ``finish``)."""
        self.set_config(wakes=wakes)
        if boot:
            b = self._run("boot.py", 30, heap)
            assert not b.crashed, b
        return subprocess.Popen(self.command("main.py", heap), cwd=self.root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_for(self, cond: Callable[[Board], bool], p: subprocess.Popen[str],
                 timeout: float = 30, every: float = 0.005) -> bool:
        """Poll ``cond(board)`` while ``p`` runs (bounded); True as soon as it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond(self):
                return True
            if p.poll() is not None:
                return cond(self)
            time.sleep(every)
        return False

    def kill(self, p: subprocess.Popen[str]) -> None:
        """kill -9: the power cut."""
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.communicate(timeout=10)

    def kill_mid_download(self, stall_at: int, cond: Callable[[Board], bool],
                          wakes: int = 20) -> None:
        """kill -9 main.py once ``cond(board)`` holds (a restart point on flash), with the
        download stalled at ``stall_at`` bytes by a relay: the kill lands before the download's
        end whatever the load. Then the board talks to the gateway directly again."""
        port = self.config["port"]
        relay = Relay(port, blocks_before(stall_at))
        self.set_config(port=relay.port)
        try:
            p = self.start(wakes=wakes)
            try:
                reached = self.wait_for(cond, p)
            finally:
                self.kill(p)
        finally:
            relay.close()
            self.set_config(port=port)
        assert reached, self.state()

    def finish(self, p: subprocess.Popen[str], timeout: float = 60) -> Run:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(p)
            raise AssertionError(f"main.py ran past {timeout} s") from None
        return Run(p.returncode, out, err)


class Relay:
    """A UDP relay between one board and the gateway on loopback, in a thread, that passes
    every gateway datagram through ``rewrite`` (the man in the middle of the refusal tests;
    None drops the datagram). ``relay.port`` is where the board sends; ``relay.rewritten``
    counts altered or dropped datagrams; ``close()`` stops the thread (it also stops by itself
    after ``lifetime`` seconds)."""

    def __init__(self, gateway_port: int, rewrite: Callable[[bytes], bytes | None],
                 lifetime: float = 120) -> None:
        import socket
        import threading

        self.rewrite = rewrite
        self.rewritten = 0
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.connect(("127.0.0.1", gateway_port))
        self.port = self.down.getsockname()[1]
        self._stop = False
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import select

        peer = None
        while not self._stop and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self.down, self.up], [], [], 0.05)
            for s in ready:
                data = s.recv(2048) if s is self.up else None
                if s is self.down:
                    data, peer = self.down.recvfrom(2048)
                    self.up.send(data)
                elif peer is not None and data is not None:
                    out = self.rewrite(data)
                    self.rewritten += out != data
                    if out is not None:
                        self.down.sendto(out, peer)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.down.close()
        self.up.close()


def flip_last_byte_of_blocks(data: bytes) -> bytes:
    """Flip one bit of every datagram big enough to be a firmware block (reports and commands
    are small)."""
    if len(data) < 600:
        return data
    return data[:-1] + bytes([data[-1] ^ 0x01])


def blocks_before(offset: int) -> Callable[[bytes], bytes | None]:
    """A rewrite that drops every Block2 response starting at ``offset`` bytes or later: the
    download stalls there, so a kill -9 cannot come after its end, however slow the test."""
    from aiocoap import Message

    def gate(data: bytes) -> bytes | None:
        block = Message.decode(data).opt.block2
        return None if block is not None and block.start >= offset else data
    return gate


UPYLIB = REPO / "tests" / "upylib"


def run_upy(code: str, heap: str = "2m", timeout: float = 60, libs: tuple[Path, ...] = ()) -> str:
    """Run ``code`` (``micropython -c``) with the repo's ``device`` package and the modules of
    ``tests/upylib/`` (``fakelink``) plus ``libs`` importable; returns stdout. A traceback, a
    non-zero exit or the timeout fails the test with MicroPython's output."""
    path = ":".join(str(p) for p in (REPO, UPYLIB, *libs))
    try:
        p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "-c", code],
                           capture_output=True, text=True, timeout=timeout, cwd=REPO,
                           env={**os.environ, "MICROPYPATH": path})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"MicroPython run timed out after {timeout} s: {e.stdout!r}") from None
    if p.returncode != 0:
        raise AssertionError(f"MicroPython failed (exit {p.returncode}):\n{p.stderr}\n--- stdout:\n{p.stdout}")
    return p.stdout
