"""Block2 load benchmark: our gateway against libcoap's ``coap-server-notls``, same file.

Sends N (default 200,000) CON GETs for 1 KiB blocks from ONE UDP socket (so message IDs wrap
three times), ``--window`` requests in flight, every response checked: code 2.05, the block
asked for (matched by token) and its bytes. Reports server CPU µs per block (utime+stime from
/proc/PID/stat), requests/s, RSS before/after and peak (VmHWM).

    python bench/gateway_blocks.py                # both servers, 200k requests each
    python bench/gateway_blocks.py -n 20000 --only gateway

Not a test: it takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import GatewayProc, free_udp_port, publish_image  # noqa: E402

IMAGE_SIZE = 1 << 20
SZX = 6  # 1024 bytes
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _option(delta: int, value: bytes) -> bytes:
    """One CoAP option header + value (deltas and lengths < 269 are all we need)."""
    def nib(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        return 13, bytes([n - 13])
    d, dx = nib(delta)
    ln, lx = nib(len(value))
    return bytes([(d << 4) | ln]) + dx + lx + value


def block_request(path: tuple[str, ...], mid: int, token: bytes, num: int) -> bytes:
    """A CON GET with Uri-Path (11) and Block2 (23), built by hand: the client must be cheap."""
    head = bytes([0x40 | len(token), 0x01, mid >> 8, mid & 0xFF]) + token
    opts, last = b"", 0
    for seg in path:
        opts += _option(11 - last, seg.encode())
        last = 11
    value = (num << 4) | SZX
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big") if value else b""
    opts += _option(23 - last, raw)
    return head + opts


class Load(asyncio.DatagramProtocol):
    def __init__(self, path: tuple[str, ...], image: bytes, total: int, window: int) -> None:
        self.path, self.image, self.total, self.window = path, image, total, window
        self.blocks = len(image) // 1024
        self.sent = self.done = self.bad = self.retransmits = 0
        self.mid = 0
        self.pending: dict[bytes, tuple[int, float, bytes]] = {}  # token -> (block, t, datagram)
        self.finished = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport
        for _ in range(self.window):
            self.send_next()

    def send_next(self) -> None:
        if self.sent >= self.total:
            return
        num = (self.sent * 7919) % self.blocks  # spread over the image, not sequential
        token = self.sent.to_bytes(4, "big")
        dgram = block_request(self.path, self.mid, token, num)
        self.mid = (self.mid + 1) & 0xFFFF
        self.pending[token] = (num, time.monotonic(), dgram)
        self.transport.sendto(dgram)
        self.sent += 1

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        tkl = data[0] & 0x0F
        token = data[4:4 + tkl]
        got = self.pending.pop(token, None)
        if got is None:
            return  # duplicate response to a retransmission
        num = got[0]
        payload = data[data.find(b"\xff", 4 + tkl) + 1:] if b"\xff" in data else b""
        if data[1] != 0x45 or payload[-1024:] != self.image[num * 1024:(num + 1) * 1024]:
            self.bad += 1
        self.done += 1
        if self.done >= self.total and not self.finished.done():
            self.finished.set_result(None)
        self.send_next()

    def resend_stale(self) -> None:
        now = time.monotonic()
        for token, (num, t, dgram) in list(self.pending.items()):
            if now - t > 2.0:
                self.pending[token] = (num, now, dgram)
                self.transport.sendto(dgram)
                self.retransmits += 1


async def load(port: int, path: tuple[str, ...], image: bytes, total: int, window: int) -> dict:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: Load(path, image, total, window), remote_addr=("127.0.0.1", port))
    t0 = time.monotonic()
    try:
        while not proto.finished.done():
            await asyncio.wait([proto.finished], timeout=1.0)
            proto.resend_stale()
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"stalled at {proto.done}/{total}")
    finally:
        transport.close()
    return {"seconds": time.monotonic() - t0, "bad": proto.bad, "retransmits": proto.retransmits}


def measure(pid: int, port: int, path: tuple[str, ...], image: bytes, total: int,
            window: int) -> dict:
    before = memory_kib(pid)
    cpu0 = cpu_seconds(pid)
    r = asyncio.run(load(port, path, image, total, window))
    cpu = cpu_seconds(pid) - cpu0
    after = memory_kib(pid)
    return {**r, "us_per_block": cpu / total * 1e6, "rps": total / r["seconds"],
            "rss_before": before["VmRSS"], "rss_after": after["VmRSS"], "peak": after["VmHWM"]}


def bench_gateway(image: bytes, total: int, window: int, tmp: Path) -> dict:
    from aiocoap import Context
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    gw = GatewayProc(tmp / "gw").start()
    try:
        async def publish() -> dict:
            ctx = await Context.create_client_context(transports=["udp6"])
            try:
                return await publish_image(ctx, gw, image, Ed25519PrivateKey.generate(), seq=1,
                                           device_class="bench")
            finally:
                await ctx.shutdown()

        img = asyncio.run(publish())
        assert gw.proc is not None
        return measure(gw.proc.pid, gw.device_port, ("f", img["id"]), image, total, window)
    finally:
        gw.stop()


def bench_libcoap(image: bytes, total: int, window: int, tmp: Path) -> dict:
    port = free_udp_port()
    server = subprocess.Popen(["coap-server-notls", "-A", "127.0.0.1", "-p", str(port), "-d", "4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        f = tmp / "image.bin"
        f.write_bytes(image)
        subprocess.run(["coap-client-notls", "-m", "put", "-b", "1024", "-f", str(f),
                        f"coap://127.0.0.1:{port}/img"], check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        return measure(server.pid, port, ("img",), image, total, window)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--requests", type=int, default=200_000)
    ap.add_argument("--window", type=int, default=16, help="requests in flight")
    ap.add_argument("--only", choices=["gateway", "libcoap"])
    args = ap.parse_args()
    image = hashlib.shake_256(b"bench image").digest(IMAGE_SIZE)
    tmp = Path(tempfile.mkdtemp(prefix="fota-bench-"))
    rows = {}
    try:
        if args.only in (None, "gateway"):
            rows["fota-gateway"] = bench_gateway(image, args.requests, args.window, tmp)
        if args.only in (None, "libcoap"):
            rows["coap-server-notls"] = bench_libcoap(image, args.requests, args.window, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.requests} Block2 GETs of 1 KiB, one client socket, window {args.window}")
    print(f"{'server':<20}{'µs CPU/block':>14}{'req/s':>10}{'RSS before':>12}{'RSS after':>11}"
          f"{'peak':>9}{'bad':>5}{'retx':>6}")
    for name, r in rows.items():
        print(f"{name:<20}{r['us_per_block']:>14.1f}{r['rps']:>10.0f}{r['rss_before'] / 1024:>10.1f}MB"
              f"{r['rss_after'] / 1024:>9.1f}MB{r['peak'] / 1024:>7.1f}MB{r['bad']:>5}"
              f"{r['retransmits']:>6}")
    if len(rows) == 2:
        g, c = rows["fota-gateway"], rows["coap-server-notls"]
        print(f"ratio gateway/libcoap: CPU per block {g['us_per_block'] / c['us_per_block']:.1f}x, "
              f"peak RSS {g['peak'] / c['peak']:.1f}x")


if __name__ == "__main__":
    main()
