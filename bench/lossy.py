"""Updating one device over a lossy, slow link: time and bytes on the wire against the ideal.

The real gateway (subprocess), the real agent (``sim.main.SimDevice``) and the fault relay
(``sim.relay``) with a one-way delay of RTT/2 and the same independent loss both ways. For each
loss rate a fresh device takes one campaign for a 256 KiB image (1 KiB blocks); the clock runs
from the start of the device to the gateway's job turning ``succeeded``. The ideal is
stop-and-wait without loss: one RTT per block (NSTART = 1). The ratio is the figure.

    python bench/lossy.py                                   # 0/10/20/30 % loss, 100 ms RTT
    python bench/lossy.py --loss 0.2 --rtt-ms 300 --size 65536 --ack-timeout 2
    python bench/lossy.py --device aiocoap    # the download alone, by aiocoap's CoAP stack

``--device aiocoap`` fetches the same blocks stop-and-wait with aiocoap (same ACK_TIMEOUT,
MAX_RETRANSMIT 4) instead of running the agent: a reference for the network part alone, and the
only mode that works without the device core.

Not a test: about six minutes with the defaults (it mostly waits; little CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from harness import GatewayProc, control, publish_image  # noqa: E402

from proto import manifest  # noqa: E402
from proto.codes import JobState  # noqa: E402
from sim.relay import DOWN, UP, Faults, Relay  # noqa: E402

CLASS = "esp32-bench"
LO = "127.0.0.1"
UDP_IPV4_HEADERS = 28  # bytes each datagram costs below CoAP


def image_bytes(size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(b"lossy bench").digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


async def one_run(ctx, gw: GatewayProc, image_id: str, trust: str, state: Path, loss: float,  # type: ignore[no-untyped-def]
                  args: argparse.Namespace) -> dict[str, float]:
    from sim.main import DeviceSpec, SimDevice

    dev = f"bench-{round(loss * 100):02d}"
    code, body = await control(ctx, gw, "POST", "dev", {"id": dev, "class": CLASS})
    assert code == "2.01", (code, body)
    code, camp = await control(ctx, gw, "POST", "camp",
                               {"image": image_id, "devices": [dev], "timeout": args.limit})
    assert code == "2.01", (code, camp)
    f = Faults(loss=loss, delay=args.rtt_ms / 2000)
    sp = DeviceSpec(id=dev, root=state / dev, device_class=CLASS, trust=[trust], version=1,
                    wake_s=0.2, ack_timeout=args.ack_timeout, block_size=args.block_size)
    async with Relay((LO, 0), (LO, gw.device_port), up=f, down=f, seed=args.seed,
                     duration=args.limit + 30) as relay:
        sim = SimDevice(sp, LO, relay.address[1], lambda line: None)
        stop = asyncio.Event()
        t0 = time.monotonic()
        task = asyncio.create_task(sim.run(stop))
        job = {}
        try:
            while time.monotonic() - t0 < args.limit:
                _, c = await control(ctx, gw, "GET", f"camp/{camp['id']}")
                (job,) = c["jobs"]
                if job["state"] in JobState.FINAL:
                    break
                await asyncio.sleep(0.1)
            seconds = time.monotonic() - t0
        finally:
            stop.set()
            await asyncio.wait([task], timeout=10)
        up, down = relay.counters[UP], relay.counters[DOWN]
    if job.get("state") != JobState.SUCCEEDED:
        raise SystemExit(f"loss {loss}: job ended {job} after {seconds:.0f} s")
    datagrams = up.datagrams_in + down.datagrams_in
    coap_bytes = up.bytes_in + down.bytes_in
    return {"loss": loss, "seconds": seconds, "datagrams": datagrams, "coap_bytes": coap_bytes,
            "wire_bytes": coap_bytes + UDP_IPV4_HEADERS * datagrams,
            "lost": up.lost + down.lost, "uplink": up.datagrams_in}


async def one_run_aiocoap(ctx, gw: GatewayProc, image_id: str, loss: float,  # type: ignore[no-untyped-def]
                          args: argparse.Namespace) -> dict[str, float]:
    from aiocoap import GET, Message
    from aiocoap.numbers.constants import Reliable
    from aiocoap.optiontypes import BlockOption

    class Tuning(Reliable):
        ACK_TIMEOUT = args.ack_timeout

    tuning = Tuning()
    szx = max(0, min(6, args.block_size.bit_length() - 5))
    f = Faults(loss=loss, delay=args.rtt_ms / 2000)
    async with Relay((LO, 0), (LO, gw.device_port), up=f, down=f, seed=args.seed,
                     duration=args.limit + 30) as relay:
        uri = f"coap://{LO}:{relay.address[1]}/f/{image_id}"
        got = 0
        t0 = time.monotonic()
        while got < args.size:
            if time.monotonic() - t0 > args.limit:
                raise SystemExit(f"loss {loss}: stuck at {got} bytes after {args.limit} s")
            msg = Message(code=GET, uri=uri, transport_tuning=tuning,
                          block2=BlockOption.BlockwiseTuple(got >> (szx + 4), 0, szx))
            try:
                resp = await ctx.request(msg, handle_blockwise=False).response
            except Exception:  # retransmissions exhausted: ask for the same block again
                continue
            got += len(resp.payload)
        seconds = time.monotonic() - t0
        up, down = relay.counters[UP], relay.counters[DOWN]
    datagrams = up.datagrams_in + down.datagrams_in
    coap_bytes = up.bytes_in + down.bytes_in
    return {"loss": loss, "seconds": seconds, "datagrams": datagrams, "coap_bytes": coap_bytes,
            "wire_bytes": coap_bytes + UDP_IPV4_HEADERS * datagrams,
            "lost": up.lost + down.lost, "uplink": up.datagrams_in}


async def bench(args: argparse.Namespace) -> list[dict[str, float]]:
    key = Ed25519PrivateKey.generate()
    trust = manifest.public_bytes(key.public_key()).hex()
    from aiocoap import Context

    with tempfile.TemporaryDirectory(prefix="fota-lossy-") as tmp:
        gw = GatewayProc(Path(tmp) / "gw").start()
        ctx = await Context.create_client_context(transports=["udp6"])
        try:
            image = await publish_image(ctx, gw, image_bytes(args.size), key, seq=2,
                                        device_class=CLASS)
            rows = []
            for loss in args.loss:
                if args.device == "agent":
                    row = await one_run(ctx, gw, image["id"], trust, Path(tmp) / "dev", loss,
                                        args)
                else:
                    row = await one_run_aiocoap(ctx, gw, image["id"], loss, args)
                rows.append(row)
                print(f"  loss {loss:.0%}: {row['seconds']:.1f} s", file=sys.stderr, flush=True)
            return rows
        finally:
            await ctx.shutdown()
            gw.stop()


def table(rows: list[dict[str, float]], args: argparse.Namespace) -> str:
    blocks = math.ceil(args.size / args.block_size)
    ideal = blocks * args.rtt_ms / 1000
    what = ("the agent, campaign start to job succeeded" if args.device == "agent"
            else "aiocoap stop-and-wait download only")
    out = [f"{what}: {args.size // 1024} KiB image, {blocks} blocks of {args.block_size} B, RTT "
           f"{args.rtt_ms:.0f} ms, ACK_TIMEOUT {args.ack_timeout} s, ideal stop-and-wait "
           f"{ideal:.1f} s",
           "",
           "| loss each way | time (s) | x ideal | datagrams | CoAP bytes | bytes incl. UDP/IPv4 "
           "| x image | uplink datagrams | lost |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['loss']:.0%} | {r['seconds']:.1f} | {r['seconds'] / ideal:.2f} "
                   f"| {r['datagrams']:.0f} | {r['coap_bytes']:.0f} | {r['wire_bytes']:.0f} "
                   f"| {r['wire_bytes'] / args.size:.2f} | {r['uplink']:.0f} | {r['lost']:.0f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", type=float, action="append",
                   help="loss probability each way (repeat; default 0, 0.1, 0.2, 0.3)")
    p.add_argument("--rtt-ms", type=float, default=100.0, help="round-trip time (100)")
    p.add_argument("--size", type=int, default=256 * 1024, help="image bytes (262144)")
    p.add_argument("--block-size", type=int, default=1024, help="Block2 size (1024)")
    p.add_argument("--ack-timeout", type=float, default=0.3,
                   help="the agent's CoAP ACK_TIMEOUT in seconds (0.3: 3 RTTs)")
    p.add_argument("--device", choices=("agent", "aiocoap"), default="agent",
                   help="who downloads: the device agent (default) or aiocoap's CoAP stack")
    p.add_argument("--seed", type=int, default=1, help="relay seed (1)")
    p.add_argument("--limit", type=float, default=900, help="seconds per run at most (900)")
    args = p.parse_args()
    args.loss = args.loss or [0.0, 0.1, 0.2, 0.3]
    rows = asyncio.run(bench(args))
    print(table(rows, args))


if __name__ == "__main__":
    main()
