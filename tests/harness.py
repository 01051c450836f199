"""Run a real gateway subprocess for tests (real UDP on 127.0.0.1, real SQLite file).

API (stable; other test modules depend on it)::

    gw = GatewayProc(data_dir, extra_args=("--enrolled-only",))   # not started yet
    gw.start(timeout=10)          # python -m gateway run --bind 127.0.0.1:<free>
                                  #   --control-bind 127.0.0.1:<free> --data <data_dir> [extra]
                                  # waits (bounded) for the "listening devices=… control=…" line
    gw.device_uri                 # "coap://127.0.0.1:P"   (devices: r, c/<id>, f/<image id>)
    gw.device_port                # P
    gw.control_uri                # "coap://127.0.0.1:Q"   (cc: the API of proto/control.py)
    gw.control_port               # Q
    gw.data                       # pathlib.Path of the data directory
    gw.kill()                     # SIGKILL, waits for the process to be gone
    gw.stop(timeout=10) -> int    # SIGTERM, returns the exit code (0 on a clean shutdown)
    gw.restart()                  # start again with the same ports and data
    gw.log_text() -> str          # everything the gateway wrote (stdout + stderr), all runs
    gw.alive() -> bool
    gw.row_counts()               # rows of devices, images, campaigns, jobs, events (SQLite)

The ``gateway`` fixture in ``tests/conftest.py`` yields a started ``GatewayProc`` on a fresh
temp data dir and stops it afterwards. ``free_udp_port()`` and ``run_gateway_once(args)`` (run
a gateway that is expected to refuse; returns (exit code, output)) help test startup checks.

Async helpers over the real control API (``ctx`` is an aiocoap client context, e.g. the
``coap_client`` fixture)::

    code, body = await control(ctx, gw, "GET", "camp/1")            # ("2.05", {...})
    code, body = await control(ctx, gw, "POST", "camp", {"image": i, "devices": ["d"]})
    code, body = await control(ctx, gw, "GET", "ev", query="since=0")
    await wait_devices(ctx, gw, n, limit=30)                        # n devices have reported
    # errors: (code, diagnostic text), e.g. ("4.04", "unknown campaign")
    img = await publish_image(ctx, gw, image_bytes, ed25519_private_key, seq=2,
                              device_class="esp32", vendor=None)    # IMAGE map: id, uri, ...
    img = publish_image_sync(gw, image_bytes, key, seq=2, device_class="esp32")  # from sync code
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY = "listening devices="


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nobody holds right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_command(bind: str, control_bind: str, data: Path, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "gateway", "run", "--bind", bind, "--control-bind",
            control_bind, "--data", str(data), *extra]


def run_gateway_once(args: Sequence[str], timeout: float = 15) -> tuple[int, str]:
    """Run ``python -m gateway`` with ``args`` to completion; returns (exit code, output)."""
    p = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


class PortTaken(RuntimeError):
    pass


class GatewayProc:
    def __init__(self, data: Path, extra_args: Sequence[str] = (), *,
                 device_port: int | None = None, control_port: int | None = None) -> None:
        self.data = Path(data)
        self.extra_args = tuple(extra_args)
        self._fixed_ports = device_port is not None or control_port is not None
        self.device_port = device_port or free_udp_port()
        self.control_port = control_port or free_udp_port()
        while self.control_port == self.device_port:
            self.control_port = free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self.log_path = self.data.parent / f"{self.data.name}.gateway.log"

    @property
    def device_uri(self) -> str:
        return f"coap://127.0.0.1:{self.device_port}"

    @property
    def control_uri(self) -> str:
        return f"coap://127.0.0.1:{self.control_port}"

    def start(self, timeout: float = 10) -> GatewayProc:
        """Start and wait for readiness. On the first start with OS-picked ports, a port that
        another test grabbed in the meantime is replaced (up to 3 times); a restart always
        keeps its ports."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if self._started or self._fixed_ports or attempt == 2:
                    raise
                self.device_port, self.control_port = free_udp_port(), free_udp_port()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> GatewayProc:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                gateway_command(f"127.0.0.1:{self.device_port}",
                                f"127.0.0.1:{self.control_port}", self.data, self.extra_args),
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.log_text()[offset:]:
                self._started = True
                return self
            if self.proc.poll() is not None:
                out = self.log_text()[offset:]
                kind = PortTaken if "cannot bind" in out else RuntimeError
                raise kind(f"gateway exited with {self.proc.returncode}:\n{out}")
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"gateway not ready within {timeout} s:\n{self.log_text()[offset:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10) -> int:
        assert self.proc is not None, "never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode

    def restart(self, timeout: float = 10) -> GatewayProc:
        if self.alive():
            self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def row_counts(self) -> tuple[int, ...]:
        """Rows of each table of the SQLite store, read-only: what a refused request must not
        change."""
        import sqlite3

        db = sqlite3.connect(f"file:{self.data / 'gateway.sqlite3'}?mode=ro", uri=True)
        try:
            return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                         for t in ("devices", "images", "campaigns", "jobs", "events"))
        finally:
            db.close()


# ---- async helpers over the real control API ---------------------------------------------

async def control(ctx, gw: GatewayProc, method: str, path: str, body=None, query: str = ""):  # type: ignore[no-untyped-def]
    """One control API request; returns (code as "2.05" text, decoded CBOR body or text)."""
    import cbor2
    from aiocoap import Code, Message

    uri = f"{gw.control_uri}/{path}" + (f"?{query}" if query else "")
    payload = b"" if body is None else cbor2.dumps(body)
    msg = Message(code=getattr(Code, method), uri=uri, payload=payload)
    if body is not None:
        msg.opt.content_format = 60
    resp = await ctx.request(msg).response
    code = resp.code.dotted
    if resp.code.is_successful():
        return code, (cbor2.loads(resp.payload) if resp.payload else None)
    return code, resp.payload.decode(errors="replace")


async def wait_devices(ctx, gw: GatewayProc, n: int, limit: float, poll: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    """Until ``n`` devices have reported (GET dev), polling every ``poll`` s for ``limit`` s."""
    deadline = time.monotonic() + limit
    count = 0
    while time.monotonic() < deadline:
        code, rows = await control(ctx, gw, "GET", "dev")
        count = len(rows) if code == "2.05" else count
        if count >= n:
            return
        await asyncio.sleep(poll)
    raise AssertionError(f"only {count} of {n} devices reported within {limit} s")


async def publish_image(ctx, gw: GatewayProc, image: bytes, key, *, seq: int,  # type: ignore[no-untyped-def]
                        device_class: str, vendor: str | None = None) -> dict:
    """Upload ``image`` (Block1 PUT blob/<sha256>), sign a manifest with ``key`` (an
    Ed25519PrivateKey) and register it (POST fw). Returns the IMAGE map."""
    import hashlib

    import cbor2
    from aiocoap import PUT, Message

    from proto import manifest, uris

    vendor = vendor or manifest.DEFAULT_VENDOR
    digest = hashlib.sha256(image).digest()
    resp = await ctx.request(Message(code=PUT, uri=f"{gw.control_uri}/blob/{digest.hex()}",
                                     payload=image)).response
    assert resp.code.is_successful(), (resp.code, resp.payload)
    assert cbor2.loads(resp.payload) == {"digest": digest.hex(), "size": len(image)}
    signed = manifest.sign(manifest.build(seq=seq, vendor=vendor, device_class=device_class,
                                          digest=digest, size=len(image),
                                          uri=uris.image_path(digest)), key)
    code, body = await control(ctx, gw, "POST", "fw",
                               {"manifest": signed, "class": device_class, "vendor": vendor})
    assert code == "2.01", (code, body)
    return body


def publish_image_sync(gw: GatewayProc, image: bytes, key, *, seq: int,  # type: ignore[no-untyped-def]
                       device_class: str) -> dict:
    """``publish_image`` from synchronous code (module-scoped fixtures), with a client context
    of its own."""
    import asyncio

    from aiocoap import Context

    async def publish() -> dict:
        ctx = await Context.create_client_context(transports=["udp6"])
        try:
            return await publish_image(ctx, gw, image, key, seq=seq, device_class=device_class)
        finally:
            await ctx.shutdown()

    return asyncio.run(publish())
