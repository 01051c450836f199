"""Every update finishes through a bad network, and nothing is lost.

Each scenario runs the real gateway (subprocess, real SQLite), the real device agent
(``sim.main.SimDevice``: the agent on FileSlots over the asyncio link) and the fault relay
between them (``sim.relay``), then checks three things agree: the device runs the new image
(byte for byte in its running slot), the gateway's job says succeeded, and the gateway's device
record says the new sequence number and result success.

Small images and a short CoAP ACK_TIMEOUT keep the suite fast: under loss, stop-and-wait time
is dominated by retransmission back-off, which scales with ACK_TIMEOUT (see bench/lossy.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import GatewayProc, control, publish_image
from test_agent_e2e import image_bytes

from proto import manifest
from proto.codes import JobState
from sim.main import DeviceSpec, SimDevice
from sim.relay import DOWN, UP, Burst, Faults, Relay

CLASS = "esp32-faults"
DEVICE = "lossy-1"
IMAGE_SIZE = 32 * 1024
LO = "127.0.0.1"


@dataclass
class Outcome:
    camp: dict[str, Any]  # GET camp/<n> after the job went final
    device: dict[str, Any]  # GET dev/<id>
    sim: SimDevice
    relay: Relay
    data: bytes
    seconds: float

    @property
    def job(self) -> dict[str, Any]:
        (job,) = self.camp["jobs"]
        return job


Midway = Callable[[Relay, GatewayProc], None]  # runs inside the relay's datagram path: no waiting


async def _get(ctx: Any, gw: GatewayProc, path: str, timeout: float = 20) -> Any:
    """GET on the control API, riding through a gateway restart (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            code, body = await asyncio.wait_for(control(ctx, gw, "GET", path), 5)
        except (asyncio.TimeoutError, OSError, Exception) as e:  # aiocoap: network errors
            if time.monotonic() > deadline:
                raise AssertionError(f"control API unreachable: {e!r}") from None
            await asyncio.sleep(0.2)
            continue
        assert code == "2.05", (path, code, body)
        return body


async def update_through(
    gw: GatewayProc, ctx: Any, tmp: Path, *, up: Faults = Faults(), down: Faults = Faults(),
    seed: int = 1, ack_timeout: float = 0.1, size: int = IMAGE_SIZE,
    midway: Midway | None = None, at_fraction: float = 0.3, limit: float = 60,
    helpers: list[asyncio.Task[Any]] | None = None, extra: dict[str, Any] | None = None,
) -> Outcome:
    """Publish an image, start a campaign for one device behind the relay, run the device until
    the job is final (at most ``limit`` s); ``midway`` runs once the device holds
    ``at_fraction`` of the image (right after the relay delivered that many bytes downstream,
    so it lands mid-transfer even when the transfer takes milliseconds)."""
    key = Ed25519PrivateKey.generate()
    trust = manifest.public_bytes(key.public_key()).hex()
    data = image_bytes(size, seed)
    image = await publish_image(ctx, gw, data, key, seq=2, device_class=CLASS)
    code, body = await control(ctx, gw, "POST", "dev", {"id": DEVICE, "class": CLASS})
    assert code == "2.01", (code, body)
    code, camp = await control(ctx, gw, "POST", "camp", {"image": image["id"],
                                                         "devices": [DEVICE], "timeout": 300})
    assert code == "2.01", (code, camp)
    sp = DeviceSpec(id=DEVICE, root=tmp / "devices" / DEVICE, device_class=CLASS, trust=[trust],
                    version=1, wake_s=0.2, ack_timeout=ack_timeout, extra=extra or {})
    t0 = time.monotonic()
    async with Relay((LO, 0), (LO, gw.device_port), up=up, down=down, seed=seed,
                     duration=limit + 30) as relay:
        fired = midway is None
        if midway is not None:
            def fire() -> None:
                nonlocal fired
                fired = True
                midway(relay, gw)
            relay.on_bytes(DOWN, int(at_fraction * size), fire)
        sim = SimDevice(sp, LO, relay.address[1], lambda line: None)
        stop = asyncio.Event()
        task = asyncio.create_task(sim.run(stop))
        try:
            deadline = t0 + limit
            while time.monotonic() < deadline:
                assert not task.done(), task.exception() if task.done() else None
                for h in helpers or ():  # e.g. the gateway restart: fail now, not at the limit
                    if h.done() and h.exception() is not None:
                        raise h.exception()  # type: ignore[misc]
                camp = await _get(ctx, gw, f"camp/{camp['id']}")
                if all(j["state"] in JobState.FINAL for j in camp["jobs"]):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"job not final after {limit} s: {camp}\n{relay.format_stats()}")
            assert fired, "the fault never fired: the transfer was over before it"
            seconds = time.monotonic() - t0
        finally:
            stop.set()
            done, _ = await asyncio.wait([task], timeout=10)
            assert done, "the device did not stop"
        task.result()
    device = await _get(ctx, gw, f"dev/{DEVICE}")
    return Outcome(camp, device, sim, relay, data, seconds)


def assert_updated_and_agreed(o: Outcome) -> None:
    """Device, gateway job and gateway device record all say: seq 2 runs, result success."""
    agent = o.sim.agent
    assert agent is not None
    assert o.job["state"] == JobState.SUCCEEDED and o.job["result"] == "success", (o.job, o.relay.stats())
    assert agent.seq == 2 and agent.state == 0, agent.s
    assert Path(agent.slots.path(agent.slots.running())).read_bytes() == o.data
    assert o.device["seq"] == 2 and o.device["result"] == "success", o.device
    assert o.device["state"] == "idle"
    assert o.camp["state"] == "done", o.camp


def wire_bytes(o: Outcome) -> int:
    """Bytes the device put on the air plus bytes the gateway sent back (as the relay saw)."""
    return o.relay.counters[UP].bytes_in + o.relay.counters[DOWN].bytes_in


# -- loss, duplication, reordering, delay --------------------------------------------------


@pytest.mark.parametrize("loss", [0.05, 0.20, 0.30])
async def test_loss_both_ways(gateway, coap_client, tmp_path, loss):
    o = await update_through(gateway, coap_client, tmp_path, up=Faults(loss=loss),
                             down=Faults(loss=loss), seed=int(loss * 100))
    assert_updated_and_agreed(o)
    assert o.relay.counters[UP].lost > 0 and o.relay.counters[DOWN].lost > 0


async def test_bursty_loss(gateway, coap_client, tmp_path):
    burst = Burst(p_gb=0.1, p_bg=0.3, loss_bad=0.9)  # 25 % of datagrams in ~3-long bursts
    o = await update_through(gateway, coap_client, tmp_path, up=Faults(burst=burst),
                             down=Faults(burst=burst), seed=7)
    assert_updated_and_agreed(o)
    assert o.relay.counters[UP].burst_lost + o.relay.counters[DOWN].burst_lost > 0


async def test_duplication(gateway, coap_client, tmp_path):
    o = await update_through(gateway, coap_client, tmp_path, up=Faults(dup=0.1),
                             down=Faults(dup=0.1), seed=3)
    assert_updated_and_agreed(o)
    assert o.relay.counters[UP].duplicated > 0 and o.relay.counters[DOWN].duplicated > 0


async def test_reordering(gateway, coap_client, tmp_path):
    f = Faults(reorder=0.2, reorder_hold=0.05, delay=0.005, jitter=0.005)
    o = await update_through(gateway, coap_client, tmp_path, up=f, down=f, seed=4)
    assert_updated_and_agreed(o)
    assert o.relay.counters[UP].reordered > 0 and o.relay.counters[DOWN].reordered > 0


async def test_300ms_rtt(gateway, coap_client, tmp_path):
    f = Faults(delay=0.15)
    o = await update_through(gateway, coap_client, tmp_path, up=f, down=f, ack_timeout=0.6,
                             size=16 * 1024, limit=60)
    assert_updated_and_agreed(o)
    # nothing was retransmitted for nothing: the timeout follows the measured round trip
    assert o.relay.counters[UP].datagrams_in < 16 + 12, o.relay.stats()


# -- interruptions mid-transfer -------------------------------------------------------------


async def test_outage_mid_transfer(gateway, coap_client, tmp_path):
    at_cut: list[int] = []

    def outage(relay: Relay, gw: GatewayProc) -> None:
        relay.cut(3.0)
        at_cut.append(relay.counters[DOWN].bytes_out)

    o = await update_through(gateway, coap_client, tmp_path, midway=outage, seed=5)
    assert_updated_and_agreed(o)
    assert o.relay.counters[UP].outage_dropped > 0
    assert o.relay.counters[DOWN].bytes_out > at_cut[0]  # it went on after the outage
    # resumed, not restarted: the image crossed the link about once
    assert o.relay.counters[DOWN].bytes_out < 1.5 * IMAGE_SIZE


async def test_nat_rebinding_mid_transfer(gateway, coap_client, tmp_path):
    def rebind(relay: Relay, gw: GatewayProc) -> None:
        relay.rebind()

    o = await update_through(gateway, coap_client, tmp_path, midway=rebind, seed=6)
    assert_updated_and_agreed(o)
    assert o.relay.rebinds == 1
    assert o.relay.counters[DOWN].bytes_out < 1.5 * IMAGE_SIZE
    # the gateway noticed the new address and recorded it
    kinds = [e for e in o.device["events"] if e["kind"] == "address"]
    assert kinds, o.device["events"]


async def test_gateway_killed_and_restarted_mid_campaign(gateway, coap_client, tmp_path):
    restarted: list[asyncio.Task[Any]] = []

    def crash(relay: Relay, gw: GatewayProc) -> None:
        gw.kill()  # SIGKILL now, mid-transfer; back in a second, on the same ports and data

        async def later() -> None:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(gw.restart)
        restarted.append(asyncio.get_running_loop().create_task(later()))

    o = await update_through(gateway, coap_client, tmp_path, midway=crash, seed=8, limit=60,
                             helpers=restarted)
    assert restarted and restarted[0].done() and restarted[0].exception() is None
    assert_updated_and_agreed(o)
    # requests during the gap were refused (ICMP) or unanswered, then the download resumed
    assert o.relay.counters[DOWN].bytes_out < 1.5 * IMAGE_SIZE
    assert gateway.log_text().count("listening devices=") == 2  # it really went down and up


async def test_everything_at_once(gateway, coap_client, tmp_path):
    """Loss, duplication, reordering, jitter, a rebinding and an outage in the same transfer."""
    f = Faults(loss=0.1, dup=0.05, reorder=0.05, reorder_hold=0.05, delay=0.01, jitter=0.01)

    def both(relay: Relay, gw: GatewayProc) -> None:
        relay.rebind()
        relay.cut(1.5)

    o = await update_through(gateway, coap_client, tmp_path, up=f, down=f, midway=both, seed=9,
                             ack_timeout=0.15)
    assert_updated_and_agreed(o)
