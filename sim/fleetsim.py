"""A protocol-level fleet: many devices from one process, for load and scale tests.

Not the agent (``fota-sim`` runs the real agent, one per device, which costs about 30 KiB and
a task each): here a device is a small record and a wake is a fixed script over the wire
protocol (``device/coap.py``'s codec, ``proto`` keys), so one process plays 100,000 devices.
Per wake a device reports; an UPDATE command makes it report ``downloading``, fetch every block
of the image (Block2, SHA-256 checked), report ``downloaded`` then ``updating``, "reboot" and
report ``idle``/success with the new seq. ``--fail P`` makes a fraction of the downloads end in
an integrity failure; ``--reboot P`` a fraction of devices reboot in the middle of a download
(they come back after ``--reboot-delay`` and resume from the block they had). DEFER waits as
told, CANCEL goes back to idle. Devices use the gateways in turn, per request with
``--alternate`` (a device may change gateway between two blocks), else per wake. An RFC 9175
Echo challenge (a source not verified by that gateway yet) is answered by repeating the
request with the Echo value.

A real fleet wakes seldom (minutes to hours): ``--wake`` is the mean interval, each wake moved by
up to ``--jitter`` of it either way. So that a campaign does not wait a whole interval per phase,
``--observe`` has each device observe its command resource ``c/<id>`` (RFC 7641; one fixed
token per device, re-registered at every wake) after a wake with nothing to do, as a device
that keeps listening between reports would: a notification carrying a command wakes it at
once (the gateway paces its notifications, caps and expires observations).

    python -m sim.fleetsim --gateway coap://127.0.0.1:5683 -n 100000 --class esp32 \\
        --until-seq 2 --duration 600

A few UDP sockets carry every device (token -> device); CON requests are retransmitted
(RFC 7252 4.2, ACK_TIMEOUT ``--ack-timeout``, ``--retransmits``; then the next gateway is
asked); at most ``--concurrency`` devices
are awake at once. Every loop is bounded by ``--duration``. Prints one progress line per
``--every`` seconds and a final summary (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from device import coap
from proto import manifest as mf
from proto import uris
from proto.codes import Op, Result, State
from proto.keys import CmdKey, ManifestKey, ReportKey

OPT_ECHO = 252  # RFC 9175
OBSERVE_TOKEN = b"\x0b"  # + the device's index (4 bytes): 5-byte tokens, requests use 4
SZX = 6  # 1024-byte blocks
MAX_RETRANSMIT = 4
CBOR_FORMAT = [(coap.CONTENT_FORMAT, coap.uint(coap.CBOR))]
UNAUTHORIZED = coap.code(4, 1)
UNAVAILABLE = coap.code(5, 3)
SHUN_SECONDS = 30.0  # a device avoids a gateway that did not answer it for this long
RCVBUF = 4 << 20  # bytes of receive buffer per socket (the kernel caps it at net.core.rmem_max)


@dataclass(slots=True)
class Dev:
    id: str
    seq: int
    state: int = State.IDLE
    result: int = Result.INITIAL
    job: int | None = None
    image: dict[int, Any] | None = None  # the manifest of the job in hand
    blocks: list[bytes] = field(default_factory=list)
    gw: int = 0  # index of the gateway it talks to next
    shun: int = -1  # a gateway that did not answer it: avoided until shun_until
    shun_until: float = 0.0
    will_fail: bool = False
    will_reboot: bool = False
    hold: float = 0.0  # seconds a 5.03 + Max-Age asked it to wait before trying again


@dataclass
class Stats:
    reports: int = 0
    blocks: int = 0
    retransmits: int = 0
    timeouts: int = 0  # exchanges given up after MAX_RETRANSMIT
    echoes: int = 0
    defers: int = 0
    updates: int = 0
    succeeded: int = 0
    failed: int = 0
    reboots: int = 0
    errors: int = 0  # 4.xx/5.xx answers (but 5.03)
    held: int = 0  # 5.03 answers (a busy gateway): asked again after their Max-Age
    observing: int = 0  # observation registrations the gateway took
    observe_refused: int = 0  # ... and refused (a cap: served as a plain GET)
    notified: int = 0  # notifications with a command (each wakes its device)
    rtt_sum: float = 0.0
    rtt_n: int = 0


class Wire:
    """UDP sockets shared by every device; requests matched to responses by token."""

    def __init__(self, sockets: int, ack_timeout: float, stats: Stats,
                 rand: random.Random, retransmits: int = MAX_RETRANSMIT) -> None:
        self.n = sockets
        self.ack_timeout = ack_timeout
        self.retransmits = retransmits
        self.stats = stats
        self.rand = rand
        self.transports: list[asyncio.DatagramTransport] = []
        self.pending: dict[bytes, asyncio.Future[coap.Message | None]] = {}
        #: called with the token of a message nobody waits for (Observe notifications)
        self.on_unsolicited: Callable[[coap.Message], None] = lambda msg: None
        self._token = rand.getrandbits(32)
        self._mid = rand.getrandbits(16)

    async def open(self, family: int) -> None:
        loop = asyncio.get_running_loop()
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        for _ in range(self.n):
            t, _p = await loop.create_datagram_endpoint(lambda: _Proto(self), local_addr=(host, 0),
                                                        family=family)
            # one socket carries thousands of devices: a released wave's notifications come
            # faster than this process reads them at times (a device has a socket of its own)
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.transports.append(t)

    def close(self) -> None:
        for t in self.transports:
            t.close()

    def received(self, data: bytes) -> None:
        try:
            msg = coap.decode(data)
        except coap.CoapError:
            return
        fut = self.pending.get(msg.token)
        if fut is not None:
            if not fut.done() and msg.code != 0:
                fut.set_result(msg)
        elif msg.code != 0:
            self.on_unsolicited(msg)

    async def request(self, slot: int, addr: Any, code: int, path: str, payload: bytes = b"",
                      options: list[tuple[int, bytes]] | None = None,
                      token: bytes | None = None) -> coap.Message | None:
        """One CON exchange; the response, or None after ``retransmits`` timeouts."""
        if token is None:
            self._token = (self._token + 1) & 0xFFFFFFFF
            token = self._token.to_bytes(4, "big")
        self._mid = (self._mid + 1) & 0xFFFF
        opts = [(coap.URI_PATH, s.encode()) for s in path.split("/") if s] + (options or [])
        data = coap.encode(coap.CON, code, self._mid, token, opts, payload)
        loop = asyncio.get_running_loop()
        transport = self.transports[slot % self.n]
        timeout = self.ack_timeout * (1 + self.rand.random() * 0.5)
        t0 = time.monotonic()
        try:
            for attempt in range(self.retransmits + 1):
                if attempt:
                    self.stats.retransmits += 1
                waiter: asyncio.Future[coap.Message | None] = loop.create_future()
                self.pending[token] = waiter
                transport.sendto(data, addr)
                timer = loop.call_later(timeout, _expire, waiter)
                msg = await waiter
                timer.cancel()
                if msg is not None:
                    self.stats.rtt_sum += time.monotonic() - t0
                    self.stats.rtt_n += 1
                    return msg
                timeout *= 2
            self.stats.timeouts += 1
            return None
        finally:
            self.pending.pop(token, None)


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.wire.received(data)


class Fleet:
    """The devices and the scripts of their wakes."""

    def __init__(self, args: argparse.Namespace, wire: Wire, addrs: list[Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.args = args
        self.wire = wire
        self.addrs = addrs
        self.clock = clock
        self.stats = wire.stats
        self.rand = random.Random(args.seed)
        self.trusted = [bytes.fromhex(k) for k in args.trust]
        self.devices = [Dev(f"{args.prefix}{k:06d}", args.seq, gw=k % len(addrs))
                        for k in range(args.devices)]
        start = clock()
        # first wakes spread over --spread seconds; (due time, index) heap; an entry whose time
        # is not the device's due_at any more was superseded (a notification woke it earlier)
        self.due_at = [start + self.rand.random() * args.spread for _ in self.devices]
        self.due = [(t, k) for k, t in enumerate(self.due_at)]
        heapq.heapify(self.due)
        self.awake = bytearray(len(self.devices))  # 1 while its wake runs
        wire.on_unsolicited = self.notified
        self.done = 0  # devices that run --until-seq and said so
        self.failed: set[int] = set()  # devices whose last job failed (until offered again)

    # ---- wire helpers ---------------------------------------------------------------------
    def _addr(self, d: Dev) -> Any:
        n = len(self.addrs)
        if n > 1 and d.gw % n == d.shun and self.clock() < d.shun_until:
            d.gw += 1
        a = self.addrs[d.gw % n]
        if self.args.alternate:
            d.gw += 1
        return a

    async def _ask(self, k: int, d: Dev, code: int, path: str, payload: bytes = b"",
                   options: list[tuple[int, bytes]] | None = None,
                   token: bytes | None = None) -> coap.Message | None:
        addr = self._addr(d)
        msg = await self.wire.request(k, addr, code, path, payload, options, token)
        if msg is None and len(self.addrs) > 1:  # that gateway is gone: ask the next one,
            d.shun = self.addrs.index(addr)  # and avoid it for a while
            d.shun_until = self.clock() + SHUN_SECONDS
            d.gw = d.shun + 1
            addr = self._addr(d)
            msg = await self.wire.request(k, addr, code, path, payload, options, token)
        if msg is not None and msg.code == UNAUTHORIZED:
            echo = msg.opt(OPT_ECHO)
            if echo is not None:  # a gateway that has not seen this source yet
                self.stats.echoes += 1
                msg = await self.wire.request(k, addr, code, path, payload,
                                              (options or []) + [(OPT_ECHO, echo)], token)
        return msg

    async def observe(self, k: int, d: Dev) -> bool:
        """Register (or refresh) the observation of ``c/<id>``; True if its answer already
        carries a command (the device goes on at once)."""
        msg = await self._ask(k, d, coap.GET, f"c/{d.id}", options=[(coap.OBSERVE, b"")],
                              token=OBSERVE_TOKEN + k.to_bytes(4, "big"))
        if msg is None or self._held(d, msg) or msg.code != coap.code(2, 5):
            return False
        if msg.opt(coap.OBSERVE) is None:
            self.stats.observe_refused += 1
        else:
            self.stats.observing += 1
        return bool(msg.payload)

    def notified(self, msg: coap.Message) -> None:
        """An Observe notification: one that carries a command wakes its device now."""
        t = msg.token
        if len(t) != 5 or t[:1] != OBSERVE_TOKEN or not msg.payload:
            return
        k = int.from_bytes(t[1:], "big")
        if k >= len(self.devices) or self.awake[k] or self.due_at[k] < 0:
            return
        self.stats.notified += 1
        now = self.clock()
        if self.due_at[k] > now:
            self.due_at[k] = now
            heapq.heappush(self.due, (now, k))

    async def report(self, k: int, d: Dev, progress: int | None = None) -> dict[int, Any] | None:
        m: dict[int, Any] = {ReportKey.ID: d.id, ReportKey.CLASS: self.args.cls,
                             ReportKey.SEQ: d.seq, ReportKey.STATE: d.state,
                             ReportKey.RESULT: d.result}
        if d.job is not None:
            m[ReportKey.JOB] = d.job
        if d.image is not None:
            m[ReportKey.SIZE] = d.image[ManifestKey.SIZE]
            m[ReportKey.TARGET] = d.image[ManifestKey.SEQ]
            m[ReportKey.PROGRESS] = (progress if progress is not None
                                     else d.image[ManifestKey.SIZE])
        self.stats.reports += 1
        msg = await self._ask(k, d, coap.POST, "r", cbor2.dumps({int(a): b for a, b in m.items()}),
                              CBOR_FORMAT)
        if msg is None or self._held(d, msg):
            return None
        if not 0x40 <= msg.code < 0x60:
            self.stats.errors += 1
            return None
        if d.state == State.IDLE:
            d.job = None  # the outcome was delivered: the job is done
        return cbor2.loads(msg.payload) if msg.payload else {}

    def _again(self, d: Dev) -> float:
        """After an exchange that got no answer: as a busy gateway's 5.03 + Max-Age said; else a
        device with an update in hand tries again after --retry seconds (as an agent backs
        off), an idle one at its next wake."""
        if d.hold:
            wait, d.hold = d.hold, 0.0
            return wait
        return min(self.args.retry, self.args.wake) if d.image is not None else self.args.wake

    def _held(self, d: Dev, msg: coap.Message) -> bool:
        """A 5.03: the gateway is busy; remember its Max-Age (60 s without one)."""
        if msg.code != UNAVAILABLE:
            return False
        self.stats.held += 1
        age = msg.opt(coap.MAX_AGE)
        d.hold = float(max(1, int.from_bytes(age, "big"))) if age is not None else 60.0
        return True

    # ---- one wake ---------------------------------------------------------------------------
    async def wake(self, k: int) -> float:
        """Run device ``k``'s wake; returns seconds until its next one."""
        d = self.devices[k]
        a = self.args
        if d.state == State.UPDATING:  # "rebooted" into the new image: it confirms
            d.seq = d.image[ManifestKey.SEQ] if d.image else d.seq
            d.state, d.result = State.IDLE, Result.SUCCESS
        if d.state == State.DOWNLOADING and d.image is not None:
            return await self.download(k, d)
        if d.state == State.DOWNLOADED and d.image is not None:  # its report went unanswered
            return await self.install(k, d)
        confirming = d.state == State.IDLE and d.image is not None
        cmd = await self.report(k, d)
        if cmd is None:
            return self._again(d)
        if confirming:  # the gateway has the outcome
            d.image = None
            self.stats.succeeded += 1
            if a.until_seq and d.seq >= a.until_seq:
                self.done += 1
                return -1.0  # finished: sleeps for the rest of the run
        op = cmd.get(CmdKey.OP)
        if op is None and a.observe and d.state == State.IDLE:
            if await self.observe(k, d):
                return 0.0  # a command came meanwhile: fetch it by a report at once
            return self._again(d)
        if op == Op.DEFER:
            self.stats.defers += 1
            return float(cmd.get(CmdKey.WAIT, a.wake))
        if op == Op.CANCEL:
            d.state, d.result, d.image, d.blocks = State.IDLE, Result.CANCELLED, None, []
            return a.wake
        if op == Op.UPDATE:
            try:
                signed = cmd[CmdKey.MANIFEST]
                m = mf.verify(signed, self.trusted) if self.trusted else mf.parse(signed)
            except (KeyError, mf.ManifestError):
                self.stats.errors += 1
                return a.wake
            self.stats.updates += 1
            self.failed.discard(k)
            d.job = cmd.get(CmdKey.JOB)
            d.image, d.blocks = m, []
            d.state, d.result = State.DOWNLOADING, Result.INITIAL
            d.will_fail = self.rand.random() < a.fail
            d.will_reboot = self.rand.random() < a.reboot
            if await self.report(k, d, progress=0) is None:
                return self._again(d)
            return await self.download(k, d)
        return a.wake

    async def download(self, k: int, d: Dev) -> float:
        a = self.args
        m = d.image
        assert m is not None
        size = m[ManifestKey.SIZE]
        nblocks = (size + 1023) // 1024
        while len(d.blocks) < nblocks:
            if d.will_reboot and len(d.blocks) == nblocks // 2:
                d.will_reboot = False
                self.stats.reboots += 1
                return a.reboot_delay  # resumes from the blocks it holds
            num = len(d.blocks)
            msg = await self._ask(k, d, coap.GET, m[ManifestKey.URI],
                                  options=[(coap.BLOCK2, coap.uint(coap.block_value(num, False,
                                                                                    SZX)))])
            if msg is None or msg.code != coap.code(2, 5):
                if msg is not None and not self._held(d, msg):
                    self.stats.errors += 1
                return self._again(d)  # resumes from the blocks it holds
            self.stats.blocks += 1
            d.blocks.append(msg.payload)
        image = b"".join(d.blocks)
        d.blocks = []
        if (len(image) != size or hashlib.sha256(image).digest() != m[ManifestKey.DIGEST]
                or d.will_fail):
            d.state, d.result, d.image = State.IDLE, Result.INTEGRITY_FAILURE, None
            self.stats.failed += 1
            self.failed.add(k)
            await self.report(k, d)
            return a.wake
        d.state = State.DOWNLOADED
        return await self.install(k, d)

    async def install(self, k: int, d: Dev) -> float:
        """Report the image complete, then install it and "reboot"."""
        a = self.args
        if await self.report(k, d) is None:
            return self._again(d)
        d.state = State.UPDATING
        if await self.report(k, d) is None:
            return self._again(d)
        return a.reboot_delay  # boots the new image, confirms on the next wake

    # ---- scheduler ------------------------------------------------------------------------
    async def dispatch(self, stop_at: float) -> None:
        """Wake every device when due, at most ``--concurrency`` at once, until the run ends."""
        active: set[asyncio.Task[None]] = set()
        limit = self.args.concurrency
        try:
            while self.clock() < stop_at and not self.finished():
                now = self.clock()
                while self.due and self.due[0][0] <= now and len(active) < limit:
                    t, k = heapq.heappop(self.due)
                    if t != self.due_at[k] or self.awake[k]:
                        continue  # superseded by an earlier wake
                    self.awake[k] = 1
                    task = asyncio.ensure_future(self._wake_and_requeue(k))
                    active.add(task)
                    task.add_done_callback(active.discard)
                if len(active) >= limit:
                    await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
                else:
                    wait = self.due[0][0] - now if self.due else 0.05
                    await asyncio.sleep(min(max(wait, 0.001), 0.05))
        finally:
            for task in active:
                task.cancel()

    async def _wake_and_requeue(self, k: int) -> None:
        try:
            after = await self.wake(k)
        except Exception as e:  # a bug here must not stall the other devices silently
            self.stats.errors += 1
            print(f"fleetsim: device {self.devices[k].id}: {type(e).__name__}: {e}",
                  file=sys.stderr)
            after = self.args.wake
        self.awake[k] = 0
        if after >= 0:
            at = self.clock() + after * (1 + self.args.jitter * (2 * self.rand.random() - 1))
            self.due_at[k] = at
            heapq.heappush(self.due, (at, k))
        else:
            self.due_at[k] = -1.0  # finished: no more wakes

    def finished(self) -> bool:
        """Every device runs --until-seq or has seen its job fail (the operator's turn)."""
        return self.args.until_seq > 0 and self.done + len(self.failed) >= len(self.devices)


async def run(args: argparse.Namespace, on_progress: Callable[[Fleet, float], None] | None = None
              ) -> Fleet:
    stats = Stats()
    rand = random.Random(args.seed)
    addrs = []
    for g in args.gateway:
        try:
            host, port = uris.device_address(g)
        except ValueError as e:
            raise SystemExit(f"fleetsim: --{e}") from None
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        addrs.append(info[4])
    family = socket.AF_INET6 if ":" in addrs[0][0] else socket.AF_INET
    wire = Wire(args.sockets, args.ack_timeout, stats, rand, args.retransmits)
    await wire.open(family)
    fleet = Fleet(args, wire, addrs)
    start = time.monotonic()
    stop_at = start + args.duration
    runner = asyncio.ensure_future(fleet.dispatch(stop_at))
    try:
        while not runner.done():
            await asyncio.wait([runner], timeout=args.every)
            if on_progress is not None:
                on_progress(fleet, time.monotonic() - start)
        runner.result()
    finally:
        runner.cancel()
        wire.close()
    return fleet


def summary(fleet: Fleet, seconds: float) -> dict[str, Any]:
    s = fleet.stats
    return {"devices": len(fleet.devices), "seconds": round(seconds, 1),
            "reports": s.reports, "reports_per_s": round(s.reports / max(seconds, 1e-9), 1),
            "blocks": s.blocks, "updates": s.updates, "succeeded": s.succeeded,
            "failed": s.failed, "reboots": s.reboots, "defers": s.defers, "echoes": s.echoes,
            "retransmits": s.retransmits, "timeouts": s.timeouts, "errors": s.errors,
            "held": s.held, "observing": s.observing, "observe_refused": s.observe_refused,
            "notified": s.notified,
            "mean_rtt_ms": round(1000 * s.rtt_sum / max(s.rtt_n, 1), 2),
            "done": fleet.done, "failed_devices": len(fleet.failed)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetsim", description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", action="append", required=True,
                   help="coap://HOST:PORT of a gateway's device bind (repeat for several)")
    p.add_argument("-n", "--devices", type=int, default=1000)
    p.add_argument("--class", dest="cls", default="sim-class")
    p.add_argument("--prefix", default="fs-", help="device ids are PREFIX + 6 digits")
    p.add_argument("--seq", type=int, default=1, help="seq of the image the devices run")
    p.add_argument("--until-seq", type=int, default=0,
                   help="stop once every device runs this seq or saw its job fail "
                        "(0: run for --duration)")
    p.add_argument("--trust", action="append", default=[],
                   help="hex public key: verify manifests (default: parse only)")
    p.add_argument("--wake", type=float, default=30.0, help="mean seconds between wakes")
    p.add_argument("--jitter", type=float, default=0.1,
                   help="each wake moves by up to this fraction of --wake either way")
    p.add_argument("--retry", type=float, default=30.0,
                   help="seconds before a device with an update in hand retries a failed "
                        "exchange (at most --wake)")
    p.add_argument("--observe", action="store_true",
                   help="observe c/<id> between wakes: a notified command wakes the device")
    p.add_argument("--spread", type=float, default=10.0, help="first wakes spread over S s")
    p.add_argument("--fail", type=float, default=0.0, help="fraction of downloads that fail")
    p.add_argument("--reboot", type=float, default=0.0,
                   help="fraction of downloads interrupted by a reboot halfway")
    p.add_argument("--reboot-delay", type=float, default=1.0)
    p.add_argument("--alternate", action="store_true",
                   help="change gateway on every request (else: stay per wake)")
    p.add_argument("--concurrency", type=int, default=256, help="devices awake at once")
    p.add_argument("--sockets", type=int, default=16)
    p.add_argument("--ack-timeout", type=float, default=2.0)
    p.add_argument("--retransmits", type=int, default=MAX_RETRANSMIT,
                   help="CON retransmissions before a request fails over to the next gateway")
    p.add_argument("--duration", type=float, default=60.0, help="stop after S s in any case")
    p.add_argument("--every", type=float, default=5.0, help="progress line every S s")
    p.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def progress(fleet: Fleet, t: float) -> None:
        s = fleet.stats
        print(f"{t:7.1f} s  reports {s.reports}  blocks {s.blocks}  done {fleet.done}"
              f"/{len(fleet.devices)}  failed {s.failed}  timeouts {s.timeouts}",
              file=sys.stderr, flush=True)

    t0 = time.monotonic()
    fleet = asyncio.run(run(args, progress))
    out = summary(fleet, time.monotonic() - t0)
    print(json.dumps(out) if args.json else "\n".join(f"{k:>14}  {v}" for k, v in out.items()))
    return 0 if not args.until_seq or fleet.finished() else 1


if __name__ == "__main__":
    raise SystemExit(main())
