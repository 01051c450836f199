"""Windowed downloads end to end: the real gateway, the real agent (default configuration, so
NON bursts with adaptive timeouts), the fault relay between them; a power cut in the middle of
a window; ``"transfer": "stop-and-wait"``; and the window against libcoap's server.

Small images and a few milliseconds of delay keep this fast; timing is bench/lossy.py's job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import GatewayProc, control, publish_image
from test_agent_e2e import image_bytes
from test_faults_scenarios import CLASS, assert_updated_and_agreed, update_through
from test_interop_libcoap_server import SIZE as LIBCOAP_SIZE
from test_interop_libcoap_server import libcoap_file  # noqa: F401  (the fixture)

from device import burst
from device.agent import Agent
from device.fetch import Fetch
from device.slots import FileSlots
from device.udp import UdpLink
from powercut import LossySlots, PowerOns
from proto import manifest
from proto.codes import JobState
from sim.relay import DOWN, UP, Faults, Relay

LO = "127.0.0.1"


async def windowed_through(gateway, coap_client, tmp_path, loss: float) -> tuple[Relay, Any]:
    """An update through a link that duplicates, reorders and loses ``loss``: the relay and the
    first window's counters."""
    f = Faults(loss=loss, dup=0.1, reorder=0.2, reorder_hold=0.02, delay=0.003)
    o = await update_through(gateway, coap_client, tmp_path, up=f, down=f, seed=11,
                             ack_timeout=0.1, size=48 * 1024)
    assert_updated_and_agreed(o)
    up, down = o.relay.counters[UP], o.relay.counters[DOWN]
    assert up.duplicated + down.duplicated > 0 and up.reordered + down.reordered > 0
    assert o.sim.windows, "the default configuration must download with the window"
    return o.relay, o.sim.windows[0]


async def test_windowed_update_through_reordering_duplication(gateway, coap_client, tmp_path):
    await windowed_through(gateway, coap_client, tmp_path, 0.0)


@pytest.mark.parametrize("loss", [0.2, 0.3])
async def test_windowed_update_through_loss_reordering_duplication(gateway, coap_client,
                                                                   tmp_path, loss):
    relay, w = await windowed_through(gateway, coap_client, tmp_path, loss)
    assert relay.counters[UP].lost + relay.counters[DOWN].lost > 0
    assert w.gap_losses > 0  # recovered without waiting for a timer


async def test_a_report_riding_along_outlives_the_runs_of_its_window(gateway, coap_client,
                                                                      tmp_path):
    """A run of the window ends every 16 KiB (the agent persists then), at 32 blocks a round
    trip in half of one, before a progress report riding along is answered: the report must stay
    pending, not count as failed (four such ended the wake, and the next wake's first report
    discarded a window of answers: 33 blocks asked again at 0 % loss, bench/lossy.py)."""
    f = Faults(delay=0.025)
    size = 192 * 1024
    o = await update_through(gateway, coap_client, tmp_path, up=f, down=f, seed=4, size=size,
                             extra={"max_failures": 1})  # one report taken for failed: next wake
    assert_updated_and_agreed(o)
    (w,) = o.sim.windows  # the boot that downloaded: its last window did it all, in one wake
    assert w.requests - w.rerequests == size // 1024  # every block asked for by this window
    assert o.sim.progress_reports >= 4


async def test_stop_and_wait_still_works_through_loss(gateway, coap_client, tmp_path):
    f = Faults(loss=0.2, delay=0.002)
    o = await update_through(gateway, coap_client, tmp_path, up=f, down=f, seed=3,
                             ack_timeout=0.05, size=16 * 1024,
                             extra={"transfer": "stop-and-wait"})
    assert_updated_and_agreed(o)
    assert o.sim.windows == []


# -- a power cut in the middle of a window ------------------------------------------------------

class MidWindowCut(LossySlots):
    """Armed, the first block written out of order (a gap behind it: mid-window) once an
    offset has been persisted cuts the power."""

    def __init__(self, root: str, armed: list[bool], state: Path) -> None:
        super().__init__(root)
        self.armed, self.state = armed, state

    def persisted(self) -> int:
        try:
            return int(json.loads(self.state.read_text()).get("offset", 0))
        except (OSError, ValueError):
            return 0

    def power_fails(self, offset: int, n: int) -> bool:
        if self.armed[0] and offset != self._pos and self.persisted():
            self.armed[0] = False
            return True
        return False


async def test_power_cut_mid_window_resumes_byte_identical(gateway, coap_client, tmp_path):
    ctx, gw = coap_client, gateway
    key = Ed25519PrivateKey.generate()
    trust = manifest.public_bytes(key.public_key()).hex()
    size = 96 * 1024
    data = image_bytes(size, 5)
    image = await publish_image(ctx, gw, data, key, seq=2, device_class=CLASS)
    code, _ = await control(ctx, gw, "POST", "dev", {"id": "cut", "class": CLASS})
    assert code == "2.01"
    code, camp = await control(ctx, gw, "POST", "camp", {"image": image["id"],
                                                         "devices": ["cut"], "timeout": 300})
    assert code == "2.01"
    config = {"id": "cut", "class": CLASS, "trust": [trust], "version": 1, "wake_s": 0.05}
    root = tmp_path / "cut"
    root.mkdir()
    f = Faults(loss=0.2, reorder=0.2, reorder_hold=0.02, delay=0.002)
    armed = [False]
    job: dict[str, Any] = {}

    async def finished(agent: Agent) -> bool:
        nonlocal job
        _, c = await control(ctx, gw, "GET", f"camp/{camp['id']}")
        (job,) = c["jobs"]
        return job["state"] in JobState.FINAL

    async with Relay((LO, 0), (LO, gw.device_port), up=f, down=f, seed=2, duration=60) as relay:
        relay.on_bytes(DOWN, size // 2, lambda: armed.__setitem__(0, True))
        p = PowerOns(config, root, relay.address[1], ack_timeout=0.05,
                     slots=lambda d: MidWindowCut(d, armed, root / "state.json"))
        agent = await p.run(finished, seconds=40)
    assert p.cuts == 1, "the power never went mid-window"
    assert 0 < p.cut_offsets[0] < size  # it went with part of the image persisted
    assert job["state"] == JobState.SUCCEEDED, job
    assert agent.seq == 2
    assert Path(p.slots.path(p.slots.running())).read_bytes() == data


# -- interop: NON bursts against a plain RFC 7959 server ------------------------------------------

def test_window_against_libcoap_server(libcoap_file, tmp_path: Path) -> None:  # noqa: F811
    port, path, data = libcoap_file
    slots = FileSlots(str(tmp_path / "slots"), capacity=LIBCOAP_SIZE)
    slots.boot()
    f = Fetch(slots, path, LIBCOAP_SIZE, hashlib.sha256(data).digest(), 1024)
    f.start(0)
    w = burst.Window(path, LIBCOAP_SIZE, f.szx, f, step=1 << 30)
    link = UdpLink(LO, port, timeout_scale=0.25)
    try:
        for _ in range(10):
            link.run(w)
            if w.done and (w.complete or w.verdict is not None):
                break
    finally:
        link.close()
    assert w.verdict is None and w.complete, w.why
    assert f.verified() and Path(slots.path("b")).read_bytes() == data
    assert w.etag is not None and link.rtt.samples > 0


async def test_window_answers_the_gateways_echo_challenge(coap_client, tmp_path: Path) -> None:
    """Loopback limited like any source: a window from an address that never reported is
    challenged (4.01 + Echo, RFC 9175) and goes on with the Echo."""
    gw = GatewayProc(tmp_path / "gw", ["--limit-loopback"]).start()
    try:
        data = image_bytes(8 * 1024, 9)
        img = await publish_image(coap_client, gw, data, Ed25519PrivateKey.generate(), seq=2,
                                  device_class=CLASS)
        slots = FileSlots(str(tmp_path / "slots"))
        slots.boot()
        f = Fetch(slots, f"/f/{img['id']}", len(data), hashlib.sha256(data).digest(), 1024)
        f.start(0)
        w = burst.Window(f"f/{img['id']}", len(data), f.szx, f, step=1 << 30)
        link = UdpLink(LO, gw.device_port, timeout_scale=0.25)
        try:
            await asyncio.to_thread(link.run, w)
        finally:
            link.close()
    finally:
        gw.stop()
    assert w.echo is not None and w.complete and w.verdict is None, w.why
    assert f.verified()
