"""``fota-demo``: the whole system on one machine, in under a minute.

Starts a gateway (``python -m gateway run`` on free loopback ports, temporary data dir), makes a
signing key and a firmware image with the real ``cc`` (temporary FOTA_HOME), runs 5 simulated
devices (the real agent; embedded defaults: 1 KiB blocks, 2 s ACK timeout), upgrades them all
with ``cc upgrade <image> --all --wait`` (progress bars), prints a final table and exits 0 when
every device confirmed its new image. Everything it started is stopped and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from proto.version import version_line

from .main import make_specs, run_fleet, use_keys

READY = "listening devices="
CLASS = "demo-board"
console = Console(stderr=False)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_image(size: int, seq: int) -> bytes:
    """A deterministic "application": a small MicroPython program padded to ``size``."""
    head = (f"# fota-demo application, version {seq}\n"
            f"print('hello from firmware seq {seq}')\n").encode()
    pad = bytearray()
    block = hashlib.sha256(head).digest()
    while len(head) + len(pad) < size:
        block = hashlib.sha256(block).digest()
        pad += block
    return head + bytes(pad[:size - len(head)])


class Demo:
    def __init__(self, work: Path, devices: int, image_size: int, wake_s: float) -> None:
        self.work = work
        self.n = devices
        self.image_size = image_size
        self.wake_s = wake_s
        self.device_port = free_udp_port()
        self.control_port = free_udp_port()
        while self.control_port == self.device_port:
            self.control_port = free_udp_port()
        self.env = {**os.environ, "FOTA_HOME": str(work / "cc-home"),
                    "FOTA_GATEWAY": f"coap://127.0.0.1:{self.control_port}",
                    "PYTHONUNBUFFERED": "1"}
        self.gateway: asyncio.subprocess.Process | None = None
        self.gateway_log = work / "gateway.log"

    async def start_gateway(self, timeout: float = 15) -> None:
        log = open(self.gateway_log, "wb")
        self.gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run",
            "--bind", f"127.0.0.1:{self.device_port}",
            "--control-bind", f"127.0.0.1:{self.control_port}",
            "--data", str(self.work / "gateway-data"), "--enrolled-only",
            stdout=log, stderr=asyncio.subprocess.STDOUT, env=self.env,
            start_new_session=True)  # Ctrl-C is ours to handle: we stop it
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.gateway_log.read_text(errors="replace"):
                return
            if self.gateway.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError("gateway did not start:\n" + self.gateway_log.read_text(errors="replace"))

    async def stop_gateway(self) -> None:
        g = self.gateway
        if g is not None and g.returncode is None:
            g.terminate()
            try:
                await asyncio.wait_for(g.wait(), 10)
            except asyncio.TimeoutError:
                g.kill()
                await g.wait()

    async def cc(self, *args: str, capture: bool = True, timeout: float = 60) -> str:
        """Run the real cc; its output goes to the terminal unless captured."""
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cc", *args, env=self.env,
            stdout=asyncio.subprocess.PIPE if capture else None,
            stderr=asyncio.subprocess.PIPE if capture else None,
            start_new_session=True)  # Ctrl-C reaches only us; we end cc
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            raise RuntimeError(f"cc {' '.join(args)} took longer than {timeout} s") from None
        except asyncio.CancelledError:  # Ctrl-C
            p.kill()
            await p.wait()
            raise
        if p.returncode != 0:
            text = (out or b"").decode(errors="replace") + (err or b"").decode(errors="replace")
            raise RuntimeError(f"cc {' '.join(args)} exited {p.returncode}: {text.strip()}")
        return (out or b"").decode()

    async def wait_registered(self, ids: list[str], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = json.loads(await self.cc("devices", "--json"))
            if set(ids) <= {r["id"] for r in rows if r.get("last_seen")}:  # enrolled and heard
                return
            await asyncio.sleep(0.3)
        raise RuntimeError("devices did not report in time")

    async def run(self) -> int:
        t0 = time.monotonic()
        console.print(f"[bold]fota-demo[/]: gateway on 127.0.0.1:{self.device_port} (devices), "
                      f"127.0.0.1:{self.control_port} (control); work dir {self.work}")
        await self.start_gateway()
        await self.cc("keys", "init")
        trust = (await self.cc("keys", "public")).strip()
        console.print(f"signing key made; devices trust {trust[:16]}…")
        image_path = self.work / "app-v2.bin"
        image_path.write_bytes(demo_image(self.image_size, 2))
        image = json.loads(await self.cc("firmware", "add", str(image_path), "--version", "2",
                                         "--class", CLASS, "--json"))
        console.print(f"image {image['id']}: seq {image['seq']}, {image['size']} bytes, "
                      f"class {CLASS}")

        specs = make_specs(self.n, self.work / "devices", CLASS, [trust], prefix="demo",
                           version=1, block_size=1024, wake_s=self.wake_s, ack_timeout=2.0)
        # enrolled with report keys, on a gateway that takes no one else: nobody can fake them
        keys = {}
        for sp in specs:
            dev = json.loads(await self.cc("devices", "add", sp.id, "--class", CLASS, "--key",
                                           "--json"))
            keys[sp.id] = dev["key"]
        use_keys(specs, keys)
        console.print(f"{self.n} devices enrolled, each with its own report key")
        stop = asyncio.Event()
        lines: list[str] = []
        fleet = asyncio.create_task(
            run_fleet(specs, "127.0.0.1", self.device_port, stop, lines.append))
        try:
            await self.wait_registered([s.id for s in specs])
            console.print(f"{self.n} simulated devices reported in (seq 1); upgrading all of "
                          f"class {CLASS}:")
            code = 0
            try:
                await self.cc("upgrade", image["id"], "--all", "--wait", capture=False,
                              timeout=50)
            except RuntimeError as e:
                console.print(f"[red]{e}[/]")
                code = 1
            # The success report is sent right after the reboot: give the sims a last wake.
            await asyncio.sleep(0.2)
            rows = {r["id"]: r for r in json.loads(await self.cc("devices", "--json"))}
        finally:
            stop.set()
            devices = await fleet
        table = Table(title="devices after the upgrade")
        for col in ("device", "seq", "state", "result", "boots", "wakes"):
            table.add_column(col)
        ok = code == 0
        for d in devices:
            a = d.agent
            row = rows.get(d.spec.id, {})
            good = a is not None and a.seq == 2 and row.get("seq") == 2
            ok = ok and good
            table.add_row(d.spec.id, str(row.get("seq")), str(row.get("state")),
                          str(row.get("result")), str(d.boots), str(d.wakes),
                          style=None if good else "red")
        console.print(table)
        elapsed = time.monotonic() - t0
        verdict = "[green]all devices confirmed seq 2[/]" if ok else "[red]not all devices updated[/]"
        console.print(f"{verdict} in {elapsed:.1f} s")
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fota-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=5)
    p.add_argument("--image-size", type=int, default=96 * 1024, help="bytes (96 KiB)")
    p.add_argument("--wake", type=float, default=1.0, help="seconds between device wakes")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--version", action="version", version=version_line("fota-demo"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fota-demo-"))
    demo = Demo(work, args.devices, args.image_size, args.wake)

    async def go() -> int:
        try:
            return await demo.run()
        finally:
            await demo.stop_gateway()

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:  # the gateway, cc and the devices are stopped by now
        console.print("fota-demo: interrupted; everything it started is stopped")
        return 130
    except (RuntimeError, OSError) as e:
        console.print(f"[red]fota-demo: {e}[/]")
        return 1
    finally:
        if args.keep:
            console.print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
