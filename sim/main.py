"""``fota-sim``: N virtual devices in one process, each the real agent on its own storage.

Every device is ``device.agent.Agent`` on ``FileSlots`` under ``--state DIR/<id>``, with its own
UDP socket and id. "Reboot" restarts the agent on the same storage with a new socket (a reset
board gets a new source port too). ``--fail-boot-percent`` gives that share of devices a
self-test that fails on any new image, so rollback is exercised. One line per state change;
runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device import agent as agent_mod
from device.agent import Agent
from device.lifecycle import event_name
from device.slots import FileSlots
from device.state import Store
from proto import uris
from proto.codes import result_name, state_name
from proto.version import version_line

from . import hostaes, hostdeflate
from .aio import AioLink, drive

FACTORY_IMAGE = b"factory image\n"


@dataclass
class DeviceSpec:
    id: str
    root: Path
    device_class: str
    trust: list[str]
    version: int = 1
    block_size: int = 1024
    wake_s: float = 2.0
    fail_boot: bool = False
    confirm_s: float = 300
    ack_timeout: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)


class SimDevice:
    """One virtual device: boots, wakes, reboots, all on the same files."""

    def __init__(self, spec: DeviceSpec, host: str, port: int,
                 log: Callable[[str], None] = print) -> None:
        self.spec = spec
        self.host, self.port = host, port
        self.log = log
        self.boots = 0
        self.wakes = 0
        self.agent: Agent | None = None
        self.progress_reports = 0  # over all boots
        self.windows: list[Any] = []  # burst.Window of each boot that downloaded (counters)

    def _config(self) -> dict[str, Any]:
        sp = self.spec
        return {"id": sp.id, "class": sp.device_class, "trust": sp.trust, "version": sp.version,
                "tables": str(sp.root.parent / "ed25519"),  # one copy for the whole fleet
                "block_size": sp.block_size, "wake_s": sp.wake_s, "confirm_s": sp.confirm_s,
                "self_test": (lambda slots: False) if sp.fail_boot else None,
                "on_change": self._changed, "aes": hostaes.aes,
                "deflate": hostdeflate, **sp.extra}

    def _changed(self, event: str, old: int, new: int) -> None:
        a = self.agent
        if a is None or old == new:
            return
        self.log(f"{self.spec.id}: {state_name(old)} -> {state_name(new)} ({event_name(event)}), "
                 f"seq {a.seq}, result {result_name(a.s['result'])}")

    def power_on(self) -> Agent:
        """The bootloader picks a slot; the agent starts on the storage it left."""
        self.spec.root.mkdir(parents=True, exist_ok=True)
        slots = FileSlots(str(self.spec.root / "slots"))
        factory = Path(slots.path("a"))
        if not factory.exists():
            factory.write_bytes(FACTORY_IMAGE)
        slots.boot()
        self.boots += 1
        if self.agent is not None:
            self.progress_reports += self.agent.progress_reports
            if self.agent.window_stats is not None:
                self.windows.append(self.agent.window_stats)
        self.agent = Agent(self._config(), slots, Store(str(self.spec.root / "state.json")))
        return self.agent

    async def run(self, stop: asyncio.Event, first_delay: float = 0.0) -> None:
        if await _sleep_or_stop(stop, first_delay):
            return
        agent = self.power_on()
        link = await AioLink.open(self.host, self.port, ack_timeout=self.spec.ack_timeout)
        try:
            while not stop.is_set():
                self.wakes += 1
                outcome = await drive(agent.wake(), link, stop)
                if outcome is None:
                    return
                action, seconds = outcome
                if action == agent_mod.REBOOT:
                    link.close()
                    agent = self.power_on()
                    link = await AioLink.open(self.host, self.port,
                                              ack_timeout=self.spec.ack_timeout)
                    continue
                if await _sleep_or_stop(stop, seconds):
                    return
        finally:
            link.close()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep; True if ``stop`` was set meanwhile."""
    if seconds <= 0:
        return stop.is_set()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def make_specs(n: int, state: Path, device_class: str, trust: list[str], *, prefix: str = "sim",
               version: int = 1, block_size: int = 1024, wake_s: float = 2.0,
               fail_boot_percent: float = 0, ack_timeout: float = 2.0,
               seed: int | None = None) -> list[DeviceSpec]:
    """N device specs; the first ``round(n * percent / 100)`` (in a seeded shuffle) fail boot."""
    failing = set(random.Random(seed).sample(range(n), round(n * fail_boot_percent / 100)))
    return [DeviceSpec(id=f"{prefix}-{i:03d}", root=state / f"{prefix}-{i:03d}",
                       device_class=device_class, trust=trust, version=version,
                       block_size=block_size, wake_s=wake_s, fail_boot=i in failing,
                       ack_timeout=ack_timeout)
            for i in range(n)]


async def run_fleet(specs: list[DeviceSpec], host: str, port: int, stop: asyncio.Event,
                    log: Callable[[str], None] = print) -> list[SimDevice]:
    devices = [SimDevice(sp, host, port, log) for sp in specs]
    spread = specs[0].wake_s if specs else 0
    tasks = [asyncio.create_task(d.run(stop, random.uniform(0, spread))) for d in devices]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    return devices


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fota-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1, help="how many virtual devices")
    p.add_argument("--gateway", required=True, help="coap://HOST:PORT of the device bind")
    p.add_argument("--class", dest="device_class", required=True, help="device class name")
    p.add_argument("--trust", required=True, action="append",
                   help="trusted Ed25519 public key, 64 hex characters (repeat for more)")
    p.add_argument("--wake", type=float, default=2.0, help="seconds between wakes (2)")
    p.add_argument("--state", type=Path, default=Path("fota-sim-state"),
                   help="directory for the devices' slots and state (kept across runs)")
    p.add_argument("--seq", type=int, default=1,
                   help="sequence number of the factory image (1)")
    p.add_argument("--version", action="version", version=version_line("fota-sim"))
    p.add_argument("--block-size", type=int, default=1024, help="Block2 size asked for (16-1024)")
    p.add_argument("--fail-boot-percent", type=float, default=0,
                   help="share of devices whose new images fail their boot check")
    p.add_argument("--id-prefix", default="sim", help="device ids are PREFIX-000, PREFIX-001, …")
    p.add_argument("--ack-timeout", type=float, default=2.0, help="CoAP ACK_TIMEOUT seconds (2)")
    p.add_argument("--transfer", choices=("window", "stop-and-wait"), default="window",
                   help="how blocks are fetched: NON bursts (window, the default) or one CON GET "
                        "a block, each progress report answered before the next block")
    p.add_argument("--keys", type=Path, default=None, metavar="DIR",
                   help="device keys as written by `cc devices add --key` "
                        "(FOTA_HOME/device-keys): DIR/<id>.key, the report key (a device with "
                        "one MACs its reports), DIR/<id>.fw, the firmware key (encrypted "
                        "images)")
    p.add_argument("--class-keys", type=Path, default=None, metavar="DIR",
                   help="class keys (FOTA_HOME/class-keys): DIR/<class>.fw")
    return p


PING_TRIES = 3  # CoAP pings, one a second: a silent gateway is named within ~3 s


class _Pong(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.heard = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 4 and data[0] >> 4 == 0x7 and data[1] == 0:  # RST (answer to a ping)
            self.heard.set()


async def gateway_answers(host: str, port: int, tries: int = PING_TRIES,
                          interval: float = 1.0) -> bool:
    """CoAP ping (an empty CON; RFC 7252 4.3: the answer is RST) to the device bind."""
    loop = asyncio.get_running_loop()
    family, _, _, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
    transport, proto = await loop.create_datagram_endpoint(_Pong, family=family)
    try:
        for mid in range(tries):
            try:
                transport.sendto(bytes([0x40, 0x00, 0x7A, mid]), addr)
            except OSError:
                pass  # e.g. ICMP refused from the last try: it is just not answering
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proto.heard.wait(), interval)
                return True
        return False
    finally:
        transport.close()


async def warn_if_silent(host: str, port: int) -> None:
    if not await gateway_answers(host, port):
        print(f"fota-sim: the gateway at {host}:{port} does not answer (no reply to "
              f"{PING_TRIES} CoAP pings): is `fota-gateway run` up with --bind on that port? "
              "The devices keep trying.", file=sys.stderr, flush=True)


def use_keys(specs: list[DeviceSpec], keys: dict[str, str]) -> None:
    """Give the devices with a report key (id -> 64 hex) their key and a counter file."""
    for sp in specs:
        if sp.id in keys:
            sp.extra["key"] = keys[sp.id]
            sp.extra["counter_file"] = str(sp.root / "report-counter")


def load_keys(specs: list[DeviceSpec], keys: Path | None, class_keys: Path | None) -> None:
    """Report and firmware keys from ``keys`` (<id>.key, <id>.fw), class keys from
    ``class_keys`` (<class>.fw): the files `cc devices add --key` and `cc firmware add
    --encrypt --class-key` write."""
    def read(path: Path) -> str | None:
        return path.read_text().strip() if path.is_file() else None

    if keys is not None:
        use_keys(specs, {sp.id: k for sp in specs if (k := read(keys / f"{sp.id}.key"))})
    for sp in specs:
        fw = read(keys / f"{sp.id}.fw") if keys is not None else None
        ck = read(class_keys / f"{sp.device_class}.fw") if class_keys is not None else None
        if fw:
            sp.extra["fw_key"] = fw
        if ck:
            sp.extra["class_key"] = ck


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        host, port = uris.device_address(args.gateway)
    except ValueError as e:
        print(f"fota-sim: {e}", file=sys.stderr)
        return 2
    for k in args.trust:
        try:
            if len(bytes.fromhex(k)) != 32:
                raise ValueError
        except ValueError:
            print(f"fota-sim: --trust wants 64 hex characters, not {k!r}", file=sys.stderr)
            return 2
    if not (16 <= args.block_size <= 1024) or args.devices < 1:
        print("fota-sim: --block-size must be 16..1024 and --devices at least 1", file=sys.stderr)
        return 2
    specs = make_specs(args.devices, args.state, args.device_class, args.trust,
                       prefix=args.id_prefix, version=args.seq, block_size=args.block_size,
                       wake_s=args.wake, fail_boot_percent=args.fail_boot_percent,
                       ack_timeout=args.ack_timeout)
    for sp in specs:
        sp.extra["transfer"] = args.transfer
    load_keys(specs, args.keys, args.class_keys)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"fota-sim: {len(specs)} device(s) -> {host}:{port}, state in {args.state}",
              flush=True)
        probe = asyncio.create_task(warn_if_silent(host, port))
        try:
            await run_fleet(specs, host, port, stop, lambda line: print(line, flush=True))
        finally:
            probe.cancel()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
