"""The real gateway through the fault relay, with a plain CoAP client (aiocoap) as the device.

These check the gateway's half of "every interruption resumes" without the device agent:
blocks are served cold to whatever source port asks (rebinding), through loss, duplication and
reordering, across a gateway SIGKILL and restart; and a report the network duplicates is
applied once. The agent's own end-to-end runs are in ``test_faults_scenarios.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import cbor2
from aiocoap import GET, POST, Message
from aiocoap.numbers.constants import Reliable
from aiocoap.optiontypes import BlockOption
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import GatewayProc, control, publish_image
from test_agent_e2e import image_bytes

from proto import uris
from proto.codes import Result, State
from proto.keys import ReportKey
from sim.relay import DOWN, UP, Faults, Relay

LO = "127.0.0.1"
CLASS = "esp32-relay"
SZX = 6  # 1024-byte blocks


class Fast(Reliable):
    """Retransmission tuned for loopback: the test waits on lost datagrams, not on RFC timers."""

    ACK_TIMEOUT = 0.1


FAST = Fast()


async def fetch(ctx, relay: Relay, image_id: str, size: int,  # type: ignore[no-untyped-def]
                on_block: Callable[[int], Awaitable[None]] | None = None,
                limit: float = 40) -> tuple[bytes, int]:
    """Stop-and-wait Block2 download through ``relay``; returns (bytes, requests sent)."""
    uri = f"coap://{LO}:{relay.address[1]}/{uris.FIRMWARE}/{image_id}"
    out = bytearray()
    requests = 0
    deadline = time.monotonic() + limit
    while len(out) < size:
        assert time.monotonic() < deadline, f"stuck at {len(out)} of {size}"
        num = len(out) >> (SZX + 4)
        msg = Message(code=GET, uri=uri, transport_tuning=FAST,
                      block2=BlockOption.BlockwiseTuple(num, 0, SZX))
        requests += 1
        try:
            resp = await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 10)
        except Exception:  # aiocoap: retransmissions exhausted, ICMP refused: ask again
            await asyncio.sleep(0.05)
            continue
        assert resp.code.dotted == "2.05", (resp.code, resp.payload)
        assert resp.opt.block2.block_number == num and resp.opt.size2 == size
        out += resp.payload
        if on_block is not None:
            await on_block(len(out))
    return bytes(out), requests


async def serve_through(gw: GatewayProc, ctx, size: int, *, up: Faults = Faults(),  # type: ignore[no-untyped-def]
                        down: Faults = Faults(), seed: int = 1,
                        midway: Callable[[Relay], Awaitable[None]] | None = None):
    data = image_bytes(size, 41)
    img = await publish_image(ctx, gw, data, Ed25519PrivateKey.generate(), seq=2,
                              device_class=CLASS)
    async with Relay((LO, 0), (LO, gw.device_port), up=up, down=down, seed=seed,
                     duration=60) as relay:
        fired = False

        async def on_block(got: int) -> None:
            nonlocal fired
            if midway is not None and not fired and got >= size // 3:
                fired = True
                await midway(relay)

        got, requests = await fetch(ctx, relay, img["id"], size, on_block)
    assert got == data
    assert midway is None or fired
    return relay, requests


async def test_blocks_through_loss_duplication_and_reordering(gateway, coap_client):
    f = Faults(loss=0.15, dup=0.1, reorder=0.1, reorder_hold=0.05)
    relay, requests = await serve_through(gateway, coap_client, 32 * 1024, up=f, down=f, seed=2)
    c = relay.counters
    assert c[UP].lost and c[DOWN].lost and c[UP].duplicated and c[DOWN].reordered
    assert requests >= 32


async def test_blocks_to_a_new_source_port_after_rebinding(gateway, coap_client):
    async def rebind(relay: Relay) -> None:
        relay.rebind()

    relay, requests = await serve_through(gateway, coap_client, 32 * 1024, midway=rebind)
    (client,) = relay.clients
    assert len(relay.upstream_ports(client)) == 2
    assert requests == 32  # no block was lost to the new port: the gateway kept no state


async def test_blocks_resume_after_gateway_sigkill(gateway, coap_client):
    async def crash(relay: Relay) -> None:
        await asyncio.to_thread(gateway.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(gateway.restart)

    relay, requests = await serve_through(gateway, coap_client, 32 * 1024, midway=crash)
    # resumed at the block it reached, not from zero: few requests beyond one per block
    assert 32 <= requests <= 32 + 10


async def test_a_duplicated_report_is_applied_once(gateway, coap_client):
    """Every uplink datagram arrives twice: the gateway's deduplication answers the copy from
    its cache, so one report makes one registration and one event."""
    async with Relay((LO, 0), (LO, gateway.device_port), up=Faults(dup=1.0), seed=3,
                     duration=30) as relay:
        uri = f"coap://{LO}:{relay.address[1]}/{uris.REPORT}"
        for state, result in ((State.IDLE, Result.INITIAL), (State.IDLE, Result.UPDATE_FAILED)):
            body = cbor2.dumps({ReportKey.ID: "dup-1", ReportKey.CLASS: CLASS, ReportKey.SEQ: 1,
                                ReportKey.STATE: state, ReportKey.RESULT: result})
            msg = Message(code=POST, uri=uri, payload=body, transport_tuning=FAST)
            resp = await asyncio.wait_for(coap_client.request(msg).response, 10)
            assert resp.code.is_successful(), resp
        await asyncio.sleep(0.2)  # let the second copies land
        assert relay.counters[UP].duplicated == 2 and relay.counters[UP].datagrams_out == 4
    code, dev = await control(coap_client, gateway, "GET", "dev/dup-1")
    assert code == "2.05"
    kinds = [e["kind"] for e in dev["events"]]
    assert kinds.count("registered") == 1 and kinds.count("state") == 1, dev["events"]
