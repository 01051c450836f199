"""The device agent end to end: the real gateway (subprocess), the real ``cc`` (subprocess),
real UDP on loopback; devices are ``sim.main.SimDevice`` (the agent on FileSlots, asyncio link).

Helpers here (``Ops``, ``start_devices``) are imported by the other ``test_agent_*`` modules.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ccproc import CC
from proto.codes import JobState
from sim.main import DeviceSpec, SimDevice

CLASS = "esp32-e2e"


class Ops:
    """The operator (``ccproc.CC``: the real ``cc``, its own FOTA_HOME) from async code: each
    ``cc`` runs in a thread, the event loop (and the devices in it) goes on."""

    def __init__(self, gw: Any, tmp: Path) -> None:
        self.sync = CC(gw, tmp)
        self.gw, self.tmp, self.env = gw, self.sync.tmp, self.sync.env

    async def cc(self, *args: str, timeout: float = 40) -> tuple[int, str, str]:
        p = await asyncio.to_thread(self.sync.run, *args, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    async def json(self, *args: str, ok: bool = True, timeout: float = 40) -> Any:
        rc, out, err = await self.cc(*args, "--json", timeout=timeout)
        if ok:
            assert rc == 0, (args, rc, out, err)
        return json.loads(out)

    async def keys(self) -> str:
        return await asyncio.to_thread(self.sync.keys)

    async def image(self, data: bytes, seq: int, device_class: str = CLASS) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.firmware, data, seq=seq,
                                       device_class=device_class)

    async def wait_registered(self, ids: list[str], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = await self.json("devices")
            if set(ids) <= {r["id"] for r in rows}:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"devices {ids} never reported")

    async def upgrade(self, image_id: str, *extra: str, timeout: float = 60) -> tuple[int, dict]:
        """``cc upgrade IMAGE --all --wait --json``: (exit code, the final campaign map)."""
        rc, out, err = await self.cc("upgrade", image_id, "--all", "--wait", *extra, "--json",
                                     timeout=timeout)
        assert out, err
        return rc, json.loads(out)


def image_bytes(size: int, tag: int) -> bytes:
    """Incompressible-looking, reproducible image content."""
    import hashlib

    out = bytearray()
    block = hashlib.sha256(b"image %d" % tag).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def spec(tmp: Path, name: str, trust: list[str], **kw: Any) -> DeviceSpec:
    kw.setdefault("wake_s", 0.2)
    kw.setdefault("ack_timeout", 1.0)
    return DeviceSpec(id=name, root=tmp / "devices" / name, device_class=kw.pop("device_class", CLASS),
                      trust=trust, **kw)


class Running:
    """Devices running in this event loop until ``stop()``."""

    def __init__(self, devices: list[SimDevice]) -> None:
        self.devices = devices
        self.stop_event = asyncio.Event()
        self.tasks = [asyncio.create_task(d.run(self.stop_event)) for d in devices]
        self.lines: list[str] = []

    async def stop(self) -> None:
        self.stop_event.set()
        done, pending = await asyncio.wait(self.tasks, timeout=10)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        assert not pending, "a device did not stop"


def start_devices(specs: list[DeviceSpec], port: int, ports: dict[str, int] | None = None,
                  host: str = "127.0.0.1") -> Running:
    """Run ``specs`` against ``port`` (``ports``: another port for some device ids)."""
    lines: list[str] = []
    ports = ports or {}
    r = Running([SimDevice(s, host, ports.get(s.id, port), lines.append) for s in specs])
    r.lines = lines
    return r


@asynccontextmanager
async def started(ops: Ops, specs: list[DeviceSpec], port: int) -> AsyncIterator[Running]:
    """``specs`` running against ``port``, every one registered, for the block; stopped after
    it (also when it fails)."""
    run = start_devices(specs, port)
    try:
        await ops.wait_registered([s.id for s in specs])
        yield run
    finally:
        await run.stop()


def job_of(camp: dict[str, Any], device: str) -> dict[str, Any]:
    (job,) = [j for j in camp["jobs"] if j["device"] == device]
    return job


async def test_one_device_updates_confirms_and_reports_success(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    data = image_bytes(100_000, 2)
    image = await ops.image(data, 2)
    sp = spec(tmp_path, "dev-1", [trust], version=1)
    async with started(ops, [sp], gateway.device_port) as run:
        rc, camp = await ops.upgrade(image["id"])
    assert rc == 0, camp
    job = job_of(camp, "dev-1")
    assert job["state"] == JobState.SUCCEEDED and job["result"] == "success"
    dev = run.devices[0]
    agent = dev.agent
    assert agent is not None and agent.seq == 2 and agent.state == 0
    # the running slot holds exactly the image; the old one is kept for the next update
    assert agent.slots.running() == "b"
    assert Path(agent.slots.path("b")).read_bytes() == data
    assert dev.boots == 2  # power-on and one reboot into the new image
    # flash wear: progress is persisted at most once per 16 KiB, plus a few lifecycle steps
    assert agent.store.writes <= 10, agent.store.writes
    rows = {r["id"]: r for r in await ops.json("devices")}
    assert rows["dev-1"]["seq"] == 2 and rows["dev-1"]["result"] == "success"
    assert any("updating -> idle" in line for line in run.lines), run.lines


async def test_twenty_devices_at_once(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    data = image_bytes(40_000, 3)
    image = await ops.image(data, 3)
    specs = [spec(tmp_path, f"fleet-{i:02d}", [trust], version=1, wake_s=0.5) for i in range(20)]
    async with started(ops, specs, gateway.device_port) as run:
        rc, camp = await ops.upgrade(image["id"])
    assert rc == 0, [j for j in camp["jobs"] if j["state"] != JobState.SUCCEEDED]
    assert len(camp["jobs"]) == 20
    for d in run.devices:
        assert d.agent is not None and d.agent.seq == 3
        assert Path(d.agent.slots.path(d.agent.slots.running())).read_bytes() == data


async def test_rollback_on_failed_self_test_and_on_missed_confirm_deadline(gateway,
                                                                             tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(20_000, 4), 4)
    failing = spec(tmp_path, "fails-check", [trust], version=1, fail_boot=True)
    hanging = spec(tmp_path, "never-confirms", [trust], version=1, confirm_s=1.0,
                   extra={"self_test": lambda slots: None})  # never decides: deadline passes
    async with started(ops, [failing, hanging], gateway.device_port) as run:
        rc, camp = await ops.upgrade(image["id"])
        status = await ops.json("status", str(camp["id"]))
    assert rc == 1
    for name in (failing.id, hanging.id):
        job = job_of(status, name)
        assert (job["state"], job["result"]) == (JobState.FAILED, "rolled_back"), job
    for d in run.devices:
        a = d.agent
        assert a is not None and a.seq == 1 and a.slots.running() == "a"
        assert a.slots.next_boot() == "a"
        assert d.boots == 3  # power-on, the trial boot of the new image, back to the old one
    rows = {r["id"]: r for r in await ops.json("devices")}
    assert rows[failing.id]["seq"] == 1 and rows[failing.id]["result"] == "rolled_back"


async def test_block_sizes_64_and_1024_and_few_progress_reports(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    data = image_bytes(70_000, 5)
    image = await ops.image(data, 5)
    specs = [spec(tmp_path, f"blocks-{b}", [trust], version=1, block_size=b) for b in (64, 1024)]
    async with started(ops, specs, gateway.device_port) as run:
        rc, camp = await ops.upgrade(image["id"])
    assert rc == 0, camp
    for d in run.devices:
        assert d.agent is not None and d.agent.seq == 5
        assert Path(d.agent.slots.path(d.agent.slots.running())).read_bytes() == data
        # a few progress reports, not one per block: start, then every 25 % (70 kB image)
        assert 2 <= d.progress_reports <= 5, d.progress_reports


async def test_cancel_mid_download_drops_it_and_reports_cancelled(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(200_000, 6), 6)
    sp = spec(tmp_path, "cancel-me", [trust], version=1, block_size=16)  # slow: 12,500 blocks
    run = start_devices([sp], gateway.device_port)
    try:
        await ops.wait_registered(["cancel-me"])
        camp = await ops.json("upgrade", image["id"], "--all")
        dev = run.devices[0]
        deadline = time.monotonic() + 20
        while not (dev.agent and dev.agent.state == 1 and dev.agent._fetch
                   and dev.agent._fetch.offset > 16384):
            assert time.monotonic() < deadline, "the download never got going"
            await asyncio.sleep(0.05)
        # power the device off mid-download, cancel, power it on: it resumes from its saved
        # state, learns of the cancel at its next exchange (no race with a fast download)
        await run.stop()
        rc, out, err = await ops.cc("cancel", str(camp["id"]))
        assert rc == 0, err
        run = start_devices([sp], gateway.device_port)
        dev = run.devices[0]
        deadline = time.monotonic() + 20
        while dev.agent is None:
            assert time.monotonic() < deadline, "the device never woke again"
            await asyncio.sleep(0.05)
        while not (dev.agent.state == 0 and not dev.agent.s["unsent"]):
            assert time.monotonic() < deadline, dev.agent.s
            await asyncio.sleep(0.05)
    finally:
        await run.stop()
    a = run.devices[0].agent
    assert (a.seq, a.s["result"], a.s["img"]) == (1, 10, None)  # cancelled, nothing pending
    assert a.slots.running() == "a" and a.slots.next_boot() == "a"
    assert any("downloading -> idle (cancel)" in line for line in run.lines), run.lines
    rows = {r["id"]: r for r in await ops.json("devices")}
    assert rows["cancel-me"]["result"] == "cancelled" and rows["cancel-me"]["state"] == "idle"
