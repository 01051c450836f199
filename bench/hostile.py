"""Hostile-load benchmark: each attack of issue 13 against a real gateway while 20 honest simulated
devices (``fota-sim``, the real agent) update, on loopback only.

For each attack: a fresh gateway (``--limit-loopback``, so loopback sources are limited and
verified like any network; the 20 honest devices share 127.0.0.1, so its per-host budget is
raised to what 20 devices need), an image, ``fota-sim --devices 20``, a campaign for all 20, then
the attacker runs for ``--seconds`` from a separate process. Printed per attack: gateway RSS at
start, peak and end (MB), the honest devices that succeeded, what the attacker sent, the answers
per second it got, and bytes answered per byte sent (amplification).

    python bench/hostile.py                          # every attack, 90 s each
    python bench/hostile.py --seconds 30 --attack observe --attack rotating

Attacks (loopback addresses stand for hosts; 127.0.0.1 is the honest fleet's):
  observe        one host registers observations of c/<id> (a new token each), answering the
                 Echo challenge as a real host would
  observe-many   the same from 4,000 rotating sources
  malformed      one host floods malformed reports at ~2,000/s
  rotating       5,000 rotating sources send valid reports with made-up device ids
  amplify        rotating sources send 17-byte NON block GETs and never answer the challenge
  uploads        abandoned Block1 uploads on the control API, a new one per datagram, at
                 50/s (the control API is loopback or OSCORE only: a local user)

Bounded: each attack stops after ``--seconds`` and after ``--max-datagrams``; the honest
campaign after ``--seconds`` + 60 s. Not a test: a full run takes ~15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import cbor2  # noqa: E402
from gateway_blocks import memory_kib  # noqa: E402

from proto.keys import ReportKey  # noqa: E402

ATTACKS = ("observe", "observe-many", "malformed", "rotating", "amplify", "uploads")
HONEST = 20
RATES = {"uploads": 50.0}  # a local user on the control API; the others use --rate
CLASS = "hostile-class"
GATEWAY_FLAGS = ["--limit-loopback", "--rate-limit", "2000", "--rate-burst", "400",
                 "--rate-limit-net", "4000", "--rate-limit-total", "1000",
                 "--auto-register", "1000"]  # 20 honest devices behind one address need 2000/s


# ---- the attacker (runs in its own process: python bench/hostile.py --attacker NAME ...) ----
def _opt(delta: int, value: bytes) -> bytes:
    def nib(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, (n - 269).to_bytes(2, "big")
    d, dx = nib(delta)
    ln, lx = nib(len(value))
    return bytes([(d << 4) | ln]) + dx + lx + value


def coap(mtype: int, code: int, mid: int, token: bytes, opts: list[tuple[int, bytes]],
         payload: bytes = b"") -> bytes:
    out = [bytes([0x40 | mtype << 4 | len(token), code, mid >> 8 & 255, mid & 255]), token]
    last = 0
    for num, value in sorted(opts, key=lambda o: o[0]):
        out.append(_opt(num - last, value))
        last = num
    if payload:
        out += [b"\xff", payload]
    return b"".join(out)


def echo_of(data: bytes) -> bytes | None:
    """The Echo option (252) of a response, if any (a small option walk)."""
    tkl = data[0] & 15
    i, num = 4 + tkl, 0
    while i < len(data) and data[i] != 0xFF:
        b = data[i]
        i += 1
        delta, length = b >> 4, b & 15
        for which in ("d", "l"):
            v = delta if which == "d" else length
            if v == 13:
                v = data[i] + 13
                i += 1
            elif v == 14:
                v = (data[i] << 8 | data[i + 1]) + 269
                i += 2
            if which == "d":
                delta = v
            else:
                length = v
        num += delta
        if num == 252:
            return data[i:i + length]
        i += length
    return None


class Sources:
    """Sockets bound to rotating loopback addresses 127.<base>.x.y (a few open at a time)."""

    def __init__(self, base: int, count: int, keep: int = 200) -> None:
        self.addrs = [f"127.{base + n // 65536}.{n // 256 % 256}.{n % 256 or 1}"
                      for n in range(count)]
        self.keep = keep
        self.open: list[socket.socket] = []
        self.n = 0

    def next(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind((self.addrs[self.n % len(self.addrs)], 0))
        self.n += 1
        self.open.append(s)
        return s

    def drain(self, stats: dict) -> None:
        for s in self.open:
            _drain(s, stats)
        while len(self.open) > self.keep:
            self.open.pop(0).close()


def _drain(s: socket.socket, stats: dict) -> list[bytes]:
    got = []
    while True:
        try:
            data = s.recv(2048)
        except (BlockingIOError, InterruptedError):
            return got
        except OSError:
            return got
        stats["answers"] += 1
        stats["bytes_in"] += len(data)
        got.append(data)


def attacker(name: str, port: int, control_port: int, seconds: float, rate: float,
             max_datagrams: int, info: dict) -> dict:
    stats = {"sent": 0, "bytes_out": 0, "answers": 0, "bytes_in": 0}
    gw = ("127.0.0.1", port)
    rng = random.Random(13)
    t0 = time.monotonic()
    one = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    one.setblocking(False)
    one.bind(("127.0.1.1", 0))
    rot = Sources(2, 5000)
    echo: bytes | None = None
    uri = info["image_uri"].strip("/").split("/")
    fw_opts = [(11, uri[0].encode()), (11, uri[1].encode())]

    def send(s: socket.socket, data: bytes, to: tuple = gw) -> None:
        try:
            s.sendto(data, to)
        except BlockingIOError:
            return
        stats["sent"] += 1
        stats["bytes_out"] += len(data)

    n = 0
    while time.monotonic() - t0 < seconds and stats["sent"] < max_datagrams:
        due = t0 + n / rate
        now = time.monotonic()
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        n += 1
        mid = n & 0xFFFF
        token = n.to_bytes(4, "big")
        if name == "observe":
            dev = f"sim-{rng.randrange(HONEST):03d}".encode()
            opts = [(6, b""), (11, b"c"), (11, dev)] + ([(252, echo)] if echo else [])
            send(one, coap(1, 1, mid, token, opts))
            for data in _drain(one, stats):
                echo = echo_of(data) or echo
        elif name == "observe-many":
            s = rot.next()
            dev = f"sim-{rng.randrange(HONEST):03d}".encode()
            send(s, coap(1, 1, mid, token, [(6, b""), (11, b"c"), (11, dev)]))
            time.sleep(0)
            for data in _drain(s, stats):  # answer the challenge, as a real host would
                e = echo_of(data)
                if e:
                    send(s, coap(1, 1, mid ^ 0x8000, token,
                                 [(6, b""), (11, b"c"), (11, dev), (252, e)]))
            rot.drain(stats)
        elif name == "malformed":
            send(one, coap(1, 2, mid, token, [(11, b"r")], b"\xa1\x01" + bytes(rng.randrange(40))))
            _drain(one, stats)
        elif name == "rotating":
            s = rot.next()
            body = cbor2.dumps({ReportKey.ID: f"fake-{n:06d}", ReportKey.CLASS: "cls",
                                ReportKey.SEQ: 1, ReportKey.STATE: 0, ReportKey.RESULT: 0})
            send(s, coap(1, 2, mid, token, [(11, b"r")], body))
            rot.drain(stats)
        elif name == "amplify":
            s = rot.next()
            send(s, coap(1, 1, mid, token[:1], fw_opts + [(23, bytes([n % 16 << 4 | 6]))]))
            rot.drain(stats)
        elif name == "uploads":
            s = rot.next() if n % 50 == 0 or not rot.open else rot.open[-1]
            digest = hashlib.sha256(n.to_bytes(8, "big")).hexdigest().encode()
            send(s, coap(0, 3, mid, token, [(11, b"blob"), (11, digest), (27, b"\x0a")],
                         bytes(64)), ("127.0.0.1", control_port))
            rot.drain(stats)
    time.sleep(0.5)
    _drain(one, stats)
    rot.keep = 0
    rot.drain(stats)
    stats["seconds"] = time.monotonic() - t0
    return stats


# ---- the run ------------------------------------------------------------------------------
async def one_attack(name: str, args: argparse.Namespace) -> dict:
    from aiocoap import Context
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from harness import GatewayProc, control, publish_image

    work = Path(tempfile.mkdtemp(prefix=f"fota-hostile-{name}-"))
    gw = GatewayProc(work / "gw", GATEWAY_FLAGS).start()
    key = Ed25519PrivateKey.generate()
    trust = key.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw).hex()
    ctx = await Context.create_client_context(transports=["udp6"])
    sim_log = open(work / "sim.log", "wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "sim.main", "--devices", str(HONEST), "--gateway", gw.device_uri,
         "--class", CLASS, "--trust", trust, "--wake", "2", "--state", str(work / "sim")],
        cwd=REPO, stdout=sim_log, stderr=subprocess.STDOUT)
    attack = None
    try:
        image = hashlib.sha256(b"hostile").digest() * (args.image_kib * 32)
        img = await publish_image(ctx, gw, image, key, seq=2, device_class=CLASS)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, rows = await control(ctx, gw, "GET", "dev")
            if code == "2.05" and len(rows) >= HONEST:
                break
            await asyncio.sleep(0.5)
        pid = gw.proc.pid
        rss0 = memory_kib(pid)["VmRSS"]
        info = json.dumps({"image_uri": img["uri"]})
        attack = subprocess.Popen(
            [sys.executable, __file__, "--attacker", name, "--port", str(gw.device_port),
             "--control-port", str(gw.control_port), "--seconds", str(args.seconds),
             "--rate", str(RATES.get(name, args.rate)), "--max-datagrams", str(args.max_datagrams),
             "--info", info], cwd=REPO, stdout=subprocess.PIPE, text=True)
        await asyncio.sleep(1)  # the attack is under way before the campaign starts
        code, camp = await control(ctx, gw, "POST", "camp",
                                   {"image": img["id"], "devices": [f"sim-{n:03d}"
                                                                    for n in range(HONEST)]})
        assert code == "2.01", camp
        peak, t0 = rss0, time.monotonic()
        counts: dict = {}
        honest_s = float("nan")
        while time.monotonic() - t0 < args.seconds + 60:
            peak = max(peak, memory_kib(pid)["VmRSS"])
            code, c = await control(ctx, gw, "GET", f"camp/{camp['id']}")
            if code == "2.05":
                counts = c["counts"]
            if counts.get("succeeded", 0) >= HONEST and honest_s != honest_s:
                honest_s = time.monotonic() - t0  # all honest devices done (attack goes on)
            if counts.get("succeeded", 0) >= HONEST and attack.poll() is not None:
                break
            await asyncio.sleep(0.5)
        out, _ = attack.communicate(timeout=args.seconds + 60)
        stats = json.loads(out.strip().splitlines()[-1])
        mem = memory_kib(pid)
        return {"attack": name, "rss0": rss0 / 1024, "peak": max(peak, mem["VmRSS"]) / 1024,
                "end": mem["VmRSS"] / 1024, "ok": counts.get("succeeded", 0),
                "honest_s": honest_s, **stats, "alive": gw.alive(),
                "tracebacks": gw.log_text().count("Traceback")}
    finally:
        if attack is not None and attack.poll() is None:
            attack.kill()
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()
        sim_log.close()
        await ctx.shutdown()
        if gw.alive():
            gw.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attack", action="append", choices=ATTACKS)
    p.add_argument("--seconds", type=float, default=90.0, help="attack length (90)")
    p.add_argument("--rate", type=float, default=2000.0, help="attacker datagrams/s (2000)")
    p.add_argument("--max-datagrams", type=int, default=400_000)
    p.add_argument("--image-kib", type=int, default=64)
    p.add_argument("--attacker", choices=ATTACKS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--control-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--info", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.attacker:
        stats = attacker(args.attacker, args.port, args.control_port, args.seconds, args.rate,
                         args.max_datagrams, json.loads(args.info))
        print(json.dumps(stats))
        return
    print(f"gateway flags: {' '.join(GATEWAY_FLAGS)}; {HONEST} honest devices (fota-sim) on "
          f"127.0.0.1, image {args.image_kib} KiB; attacker {args.rate:g} datagrams/s for "
          f"{args.seconds:g} s (loopback, 2 shared cores: timings are noisy)", flush=True)
    head = (f"{'attack':13} {'RSS start':>9} {'peak':>6} {'end':>6} {'honest ok':>9} "
            f"{'done in s':>9} {'sent':>7} {'answers/s':>9} {'bytes x':>7} alive")
    rows = []
    for name in args.attack or ATTACKS:
        r = asyncio.run(one_attack(name, args))
        rows.append(r)
        print(head if len(rows) == 1 else "", end="\n" if len(rows) == 1 else "")
        print(f"{r['attack']:13} {r['rss0']:8.1f}M {r['peak']:5.1f}M {r['end']:5.1f}M "
              f"{r['ok']:>6}/{HONEST} {r['honest_s']:9.1f} {r['sent']:7} "
              f"{r['answers'] / r['seconds']:9.1f} "
              f"{r['bytes_in'] / max(1, r['bytes_out']):7.2f} "
              f"{'yes' if r['alive'] and not r['tracebacks'] else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
