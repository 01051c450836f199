"""Updating devices over a lossy, slow link: time, radio-on time, datagrams and bytes on air.

The real gateway (subprocess), the real agent (``sim.main.SimDevice``'s storage, driven here
so each link's counters are at hand) and the fault relay (``sim.relay``) with a one-way delay
of RTT/2 and the same independent loss both ways. For each loss rate and mode a fresh device
takes one campaign; the clock runs from the device's start to the gateway's job turning
``succeeded`` (reboot and confirmation included). The ideal is stop-and-wait without loss: one
RTT per block (NSTART = 1).

Modes, measured in the same run:

* ``old``: the agent as it was before windowed downloads: ``"transfer": "stop-and-wait"``
  and a fixed ACK_TIMEOUT (``--old-ack``, 0.3 s: three RTTs, hand-tuned), the round-trip
  estimator switched off (a link whose timeout never moves);
* ``new``: the default configuration: NON bursts (``device/burst.py``), the timeout learnt
  from the link (2 s only as the first guess), nothing tuned.

The energy figure, per update: radio-on time (the device's first datagram to its last before
the reboot into the new image: the download wake, its reports included), datagrams the device
sent and received, and bytes on air (every datagram either way as sent, lost ones included,
plus 28 bytes of UDP/IPv4 each). "window download" is the window's own span: its first block
request to its last block (blank for stop-and-wait).

    python bench/lossy.py                          # 0/10/20/30 % loss, 100 ms RTT, 256 KiB
    python bench/lossy.py --nbiot                  # 1.5 s RTT, 5 % loss, 128 KiB
    python bench/lossy.py --devices 20 --loss 0.1 --modes new   # 20 devices behind one link
    python bench/lossy.py --nbiot --trace /tmp/w.txt   # and every window event, one a line

``--devices N`` puts N devices behind the one relay (one source host for the gateway, whose
per-host rate limit then applies: the gateway runs with ``--limit-loopback``); the row is the
time until all N succeeded, the energy columns are per device (mean). Not a test: the old
mode takes about ten minutes at the default sizes (it mostly waits; little CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from harness import GatewayProc, control, publish_image  # noqa: E402

from device import agent as agent_mod  # noqa: E402
from device import rtt  # noqa: E402
from proto import manifest  # noqa: E402
from proto.codes import JobState  # noqa: E402
from sim.aio import AioLink, drive  # noqa: E402
from sim.main import DeviceSpec, SimDevice  # noqa: E402
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


class FixedRtt(rtt.Rtt):
    """The timeout before this work: ACK_TIMEOUT, never measured, never backed off."""

    def sample(self, ms: int) -> None:
        pass

    def answered(self) -> None:
        pass

    def backoff(self) -> None:
        pass


class Device:
    """One device driven wake by wake, its links kept for their counters."""

    def __init__(self, spec: DeviceSpec, port: int, mode: str, old_ack: float) -> None:
        self.sim = SimDevice(spec, LO, port, lambda line: None)
        self.port = port
        self.mode = mode
        self.old_ack = old_ack
        self.links: list[AioLink] = []

    async def _link(self) -> AioLink:
        if self.mode == "old":
            link = await AioLink.open(LO, self.port, ack_timeout=self.old_ack)
            link.rtt = FixedRtt(int(self.old_ack * 1000))
        else:
            link = await AioLink.open(LO, self.port)  # ACK_TIMEOUT 2 s: the first guess
        self.links.append(link)
        return link

    async def run(self, stop: asyncio.Event) -> None:
        agent = self.sim.power_on()
        link = await self._link()
        try:
            while not stop.is_set():
                out = await drive(agent.wake(), link, stop)
                if out is None:
                    return
                if out[0] == agent_mod.REBOOT:
                    link.close()
                    agent = self.sim.power_on()
                    link = await self._link()
                    continue
                try:
                    await asyncio.wait_for(stop.wait(), out[1])
                except asyncio.TimeoutError:
                    pass
        finally:
            link.close()

    def energy(self) -> dict[str, float]:
        dl = self.links[0]  # the wake that downloaded (until the reboot into the new image)
        return {"radio_on": (dl.last or 0) - (dl.first or 0),
                "sent": sum(link.sent for link in self.links),
                "received": sum(link.received for link in self.links)}


async def one_run(ctx: Any, gw: GatewayProc, image_id: str, trust: str, state: Path,
                  loss: float, mode: str, rtt_ms: float, args: argparse.Namespace,
                  tag: str) -> dict[str, Any]:
    ids = [f"{tag}-{i:02d}" for i in range(args.devices)]
    for dev in ids:
        code, body = await control(ctx, gw, "POST", "dev", {"id": dev, "class": CLASS})
        assert code == "2.01", (code, body)
    code, camp = await control(ctx, gw, "POST", "camp",
                               {"image": image_id, "devices": ids, "timeout": args.limit})
    assert code == "2.01", (code, camp)
    f = Faults(loss=loss, delay=rtt_ms / 2000)
    extra = {"transfer": "stop-and-wait"} if mode == "old" else {}
    async with Relay((LO, 0), (LO, gw.device_port), up=f, down=f, seed=args.seed,
                     duration=args.limit + 30) as relay:
        devices = [Device(DeviceSpec(id=dev, root=state / dev, device_class=CLASS,
                                     trust=[trust], version=1, wake_s=0.2,
                                     block_size=args.block_size, extra=extra),
                          relay.address[1], mode, args.old_ack) for dev in ids]
        stop = asyncio.Event()
        t0 = time.monotonic()
        tasks = [asyncio.create_task(d.run(stop)) for d in devices]
        jobs: list[dict[str, Any]] = []
        try:
            while time.monotonic() - t0 < args.limit:
                _, c = await control(ctx, gw, "GET", f"camp/{camp['id']}")
                jobs = c["jobs"]
                if all(j["state"] in JobState.FINAL for j in jobs):
                    break
                await asyncio.sleep(0.1)
            seconds = time.monotonic() - t0
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=10)
        up, down = relay.counters[UP], relay.counters[DOWN]
    bad = [j for j in jobs if j["state"] != JobState.SUCCEEDED]
    if bad or not jobs:
        raise SystemExit(f"loss {loss} {mode}: jobs not succeeded after {seconds:.0f} s: {bad}")
    for d in devices:
        slots = d.sim.agent.slots  # type: ignore[union-attr]
        if Path(slots.path(slots.running())).read_bytes() != image_bytes(args.size):
            raise SystemExit(f"loss {loss} {mode}: {d.sim.spec.id} runs other bytes")
    e = [d.energy() for d in devices]
    datagrams = up.datagrams_in + down.datagrams_in
    air = up.bytes_in + down.bytes_in + UDP_IPV4_HEADERS * datagrams
    windows = [w for d in devices for w in d.sim.windows] + [
        d.sim.agent.window_stats for d in devices if d.sim.agent.window_stats]  # type: ignore[union-attr]
    dl = [(w.done_ms - w.first_ms) / 1000 for w in windows if w.done_ms is not None]
    return {"loss": loss, "mode": mode, "seconds": seconds,
            "download": statistics.mean(dl) if dl else float("nan"),
            "radio_on": statistics.mean(x["radio_on"] for x in e),
            "sent": statistics.mean(x["sent"] for x in e),
            "received": statistics.mean(x["received"] for x in e),
            "air": air / len(devices),
            "gap": sum(w.gap_losses for w in windows),
            "copies": sum(getattr(w, "copies", 0) for w in windows), "timeouts": sum(w.timeouts for w in windows),
            "slowed": sum(w.slowed for w in windows) / len(devices)}


async def bench(args: argparse.Namespace, rtt_ms: float) -> list[dict[str, Any]]:
    key = Ed25519PrivateKey.generate()
    trust = manifest.public_bytes(key.public_key()).hex()
    from aiocoap import Context

    with tempfile.TemporaryDirectory(prefix="fota-lossy-") as tmp:
        gw_args = ["--limit-loopback"] if args.devices > 1 else []
        gw = GatewayProc(Path(tmp) / "gw", gw_args).start()
        ctx = await Context.create_client_context(transports=["udp6"])
        try:
            image = await publish_image(ctx, gw, image_bytes(args.size), key, seq=2,
                                        device_class=CLASS)
            rows = []
            n = 0
            for loss in args.loss:
                for mode in args.modes:
                    n += 1
                    row = await one_run(ctx, gw, image["id"], trust, Path(tmp) / "dev", loss,
                                        mode, rtt_ms, args, f"b{n}")
                    rows.append(row)
                    print(f"  loss {loss:.0%} {mode}: {row['seconds']:.1f} s", file=sys.stderr,
                          flush=True)
            return rows
        finally:
            await ctx.shutdown()
            gw.stop()


def table(rows: list[dict[str, Any]], args: argparse.Namespace, rtt_ms: float) -> str:
    blocks = math.ceil(args.size / args.block_size)
    ideal = blocks * rtt_ms / 1000
    who = f"{args.devices} devices behind one link, per device" if args.devices > 1 else "one device"
    out = [f"{who}: {args.size // 1024} KiB image, {blocks} blocks of {args.block_size} B, RTT "
           f"{rtt_ms:.0f} ms, ideal stop-and-wait {ideal:.1f} s; old: stop-and-wait, fixed "
           f"ACK_TIMEOUT {args.old_ack} s; new: default configuration",
           "",
           "| loss each way | mode | time (s) | x ideal | radio on (s) | window download (s) "
           "| sent | received | bytes on air | x image | gap re-asks | tail copies | timeouts | 5.03 |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['loss']:.0%} | {r['mode']} | {r['seconds']:.1f} "
                   f"| {r['seconds'] / ideal:.2f} | {r['radio_on']:.1f} "
                   f"| {'–' if math.isnan(r['download']) else format(r['download'], '.1f')} "
                   f"| {r['sent']:.0f} "
                   f"| {r['received']:.0f} | {r['air']:.0f} | {r['air'] / args.size:.2f} "
                   f"| {r['gap']} | {r['copies']} | {r['timeouts']} | {r['slowed']:.0f} |")
    return "\n".join(out)


def trace(path: Path) -> None:
    """Log the windows' requests, answers, timer events and runs (the agent persists and
    reports between runs) to ``path`` at exit: where a download's time goes."""
    import atexit

    from device import burst

    log: list[str] = []
    t0: list[int] = []
    W = burst.Window
    send, block, timeout, start = W._send, W._block, W.on_timeout, W.start

    def at(now: int) -> int:
        t0[:] = t0 or [now]
        return now - t0[0]

    def _send(w: Any, num: int, now: int) -> None:
        log.append(f"{at(now)} send {num} {w.cwnd} {w.inflight} {w._tries[num % w.span] + 1} "
                   f"{w.rtt.srtt} {w.rtt.rto}")
        send(w, num, now)

    def _block(w: Any, msg: Any, now: int) -> None:
        num = (int.from_bytes(msg.token, "big") - w.salt) & 0xFFFFFFFF
        log.append(f"{at(now)} ans {num} {w.cwnd} {w.inflight} {msg.code >> 5}.{msg.code & 31:02d}")
        block(w, msg, now)

    def _timeout(w: Any, now: int) -> None:
        log.append(f"{at(now)} timer {w.base} {w.cwnd} {w.inflight}")
        timeout(w, now)

    def _start(w: Any, now: int, *a: Any, **k: Any) -> None:
        log.append(f"{at(now)} run {w.base} {w.cwnd} {w.inflight}")
        start(w, now, *a, **k)

    W._send, W._block, W.on_timeout, W.start = _send, _block, _timeout, _start  # type: ignore
    atexit.register(lambda: path.write_text("\n".join(log) + "\n"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", type=float, action="append",
                   help="loss probability each way (repeat; default 0, 0.1, 0.2, 0.3)")
    p.add_argument("--rtt-ms", type=float, default=None, help="round-trip time (100)")
    p.add_argument("--size", type=int, default=None, help="image bytes (262144)")
    p.add_argument("--block-size", type=int, default=1024, help="Block2 size (1024)")
    p.add_argument("--modes", default="old,new", help="old,new (default both, same run)")
    p.add_argument("--old-ack", type=float, default=0.3,
                   help="the old mode's fixed ACK_TIMEOUT in seconds (0.3: 3 RTTs)")
    p.add_argument("--nbiot", action="store_true",
                   help="NB-IoT-like profile: 1.5 s RTT, 5 %% loss, 128 KiB, new mode")
    p.add_argument("--devices", type=int, default=1, help="devices behind the one link (1)")
    p.add_argument("--seed", type=int, default=1, help="relay seed (1)")
    p.add_argument("--limit", type=float, default=900, help="seconds per run at most (900)")
    p.add_argument("--trace", type=Path, help="write every window event to this file: ms since "
                   "the first, event, block, cwnd, in flight (send: try, SRTT, RTO; ans: code)")
    args = p.parse_args()
    if args.trace:
        trace(args.trace)
    args.modes = [m for m in args.modes.split(",") if m]
    if args.nbiot:
        rtt_ms = args.rtt_ms or 1500.0
        args.size = args.size or 128 * 1024
        args.loss = args.loss or [0.05]
        if "--modes" not in sys.argv:
            args.modes = ["new"]
    else:
        rtt_ms = args.rtt_ms or 100.0
        args.size = args.size or 256 * 1024
        args.loss = args.loss or [0.0, 0.1, 0.2, 0.3]
    rows = asyncio.run(bench(args, rtt_ms))
    print(table(rows, args, rtt_ms))


if __name__ == "__main__":
    main()
