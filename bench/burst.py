"""Stop-and-wait CON against NON bursts (``device.burst``) over the same slow, lossy link.

The setup of ``bench/lossy.py``: the real gateway (subprocess) behind the fault relay
(``sim.relay``) with a one-way delay of RTT/2 and the same independent loss both ways, a
256 KiB image in 1 KiB blocks. Only the download is timed. Stop-and-wait is the device core
as the agent uses it (``udp.UdpLink``: one CON GET per block, RFC 7252 retransmission, the
block asked again if the exchange gives up); the bursts are ``burst.fetch`` with window 8 and
16. Both use the same timeout (``--timeout``: the CON's ACK_TIMEOUT, the burst's re-request
timeout). The ideal is stop-and-wait without loss: one RTT per block.

    python bench/burst.py                     # 0/10/20/30 % loss, 100 ms RTT, ~4 minutes
    python bench/burst.py --loss 0.2 --window 16

Not a test: it mostly waits.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from harness import GatewayProc, publish_image  # noqa: E402
from lossy import UDP_IPV4_HEADERS, image_bytes  # noqa: E402

from device import burst, coap, fetch, udp  # noqa: E402
from proto import uris  # noqa: E402
from sim.relay import DOWN, UP, Faults, Relay  # noqa: E402

LO = "127.0.0.1"


def stop_and_wait(port: int, path: str, size: int, szx: int, timeout_ms: int,
                  limit: float) -> bytes:
    """One CON GET per block, in order, as the agent's download does."""
    link = udp.UdpLink(LO, port, timeout_scale=timeout_ms / 2000)
    out = bytearray()
    t0 = time.monotonic()
    try:
        while len(out) < size:
            if time.monotonic() - t0 > limit:
                raise SystemExit(f"stop-and-wait stuck at {len(out)} bytes")
            resp = link.request(coap.Request(coap.GET, path, block2=(len(out) >> (szx + 4), szx)))
            if resp is not None and resp.code == fetch.CONTENT:
                out += resp.payload
    finally:
        link.close()
    return bytes(out)


def bursts(port: int, path: str, size: int, szx: int, window: int, timeout_ms: int) -> bytes:
    out = bytearray()

    def write(off: int, data: bytes) -> None:
        out.extend(data)

    if not burst.fetch(LO, port, path, size, write, szx, window, timeout_ms, max_tries=50):
        raise SystemExit(f"burst window {window} ran out of tries")
    return bytes(out)


async def one_run(gw: GatewayProc, path: str, data: bytes, loss: float, mode: str,
                  args: argparse.Namespace) -> dict[str, float | str]:
    szx = fetch.szx_for(args.block_size)
    timeout_ms = int(args.timeout * 1000)
    f = Faults(loss=loss, delay=args.rtt_ms / 2000)
    async with Relay((LO, 0), (LO, gw.device_port), up=f, down=f, seed=args.seed,
                     duration=args.limit + 30) as relay:
        port = relay.address[1]
        t0 = time.monotonic()
        if mode == "stop-and-wait":
            got = await asyncio.to_thread(stop_and_wait, port, path, len(data), szx, timeout_ms,
                                          args.limit)
        else:
            got = await asyncio.to_thread(bursts, port, path, len(data), szx,
                                          int(mode.split()[-1]), timeout_ms)
        seconds = time.monotonic() - t0
        up, down = relay.counters[UP], relay.counters[DOWN]
    if got != data:
        raise SystemExit(f"{mode} at loss {loss}: the bytes differ")
    datagrams = up.datagrams_in + down.datagrams_in
    coap_bytes = up.bytes_in + down.bytes_in
    return {"mode": mode, "loss": loss, "seconds": seconds, "datagrams": datagrams,
            "wire_bytes": coap_bytes + UDP_IPV4_HEADERS * datagrams, "uplink": up.datagrams_in}


async def bench(args: argparse.Namespace) -> list[dict[str, float | str]]:
    from aiocoap import Context

    data = image_bytes(args.size)
    modes = ["stop-and-wait"] + [f"burst window {w}" for w in args.window]
    with tempfile.TemporaryDirectory(prefix="fota-burst-") as tmp:
        gw = GatewayProc(Path(tmp) / "gw").start()
        ctx = await Context.create_client_context(transports=["udp6"])
        try:
            img = await publish_image(ctx, gw, data, Ed25519PrivateKey.generate(), seq=2,
                                      device_class="esp32-bench")
            path = f"{uris.FIRMWARE}/{img['id']}"
            rows = []
            for loss in args.loss:
                for mode in modes:
                    row = await one_run(gw, path, data, loss, mode, args)
                    rows.append(row)
                    print(f"  loss {loss:.0%} {mode}: {row['seconds']:.1f} s", file=sys.stderr,
                          flush=True)
            return rows
        finally:
            await ctx.shutdown()
            gw.stop()


def table(rows: list[dict[str, float | str]], args: argparse.Namespace) -> str:
    blocks = math.ceil(args.size / args.block_size)
    ideal = blocks * args.rtt_ms / 1000
    out = [f"download only: {args.size // 1024} KiB image, {blocks} blocks of {args.block_size} "
           f"B, RTT {args.rtt_ms:.0f} ms, timeout {args.timeout} s, ideal stop-and-wait "
           f"{ideal:.1f} s",
           "",
           "| loss each way | mode | time (s) | x ideal | datagrams | uplink datagrams "
           "| bytes incl. UDP/IPv4 | x image |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['loss']:.0%} | {r['mode']} | {r['seconds']:.1f} "
                   f"| {float(r['seconds']) / ideal:.2f} | {r['datagrams']:.0f} "
                   f"| {r['uplink']:.0f} | {r['wire_bytes']:.0f} "
                   f"| {float(r['wire_bytes']) / args.size:.2f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", type=float, action="append",
                   help="loss probability each way (repeat; default 0, 0.1, 0.2, 0.3)")
    p.add_argument("--window", type=int, action="append",
                   help="burst window (repeat; default 8, 16)")
    p.add_argument("--rtt-ms", type=float, default=100.0, help="round-trip time (100)")
    p.add_argument("--size", type=int, default=256 * 1024, help="image bytes (262144)")
    p.add_argument("--block-size", type=int, default=1024, help="Block2 size (1024)")
    p.add_argument("--timeout", type=float, default=0.3,
                   help="ACK_TIMEOUT / re-request timeout in seconds (0.3: 3 RTTs)")
    p.add_argument("--seed", type=int, default=1, help="relay seed (1)")
    p.add_argument("--limit", type=float, default=600, help="seconds per run at most (600)")
    args = p.parse_args()
    args.loss = args.loss or [0.0, 0.1, 0.2, 0.3]
    args.window = args.window or [8, 16]
    rows = asyncio.run(bench(args))
    print(table(rows, args))


if __name__ == "__main__":
    main()
