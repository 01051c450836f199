"""asyncio transport for the device agent: the same sans-IO CoAP core as on a board.

``AioLink`` owns one UDP socket (one simulated device) and drives ``device.coap.Exchange`` —
retransmission, deduplication and matching live there, not here; this file only moves bytes
and time. ``drive`` runs an agent wake (a generator of requests) over a link.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Generator
from typing import Any

from device import coap, rtt


def now_ms() -> int:
    return int(time.monotonic() * 1000)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self.error: Exception | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.queue.full():  # a flood is dropped, as a small device's buffer would
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like
        self.error = exc


class AioLink:
    """One device's UDP socket to the gateway; ``await link.request(req)`` -> Response | None."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _Datagrams,
                 ack_timeout: float, rand: random.Random) -> None:
        self.transport = transport
        self.proto = proto
        self.ack_timeout = ack_timeout
        self.rand = rand
        self.mid = rand.randrange(0x10000)
        self.rtt = rtt.Rtt(int(ack_timeout * 1000))  # ACK_TIMEOUT is the first guess only
        self.sent = 0  # datagrams, retransmissions included
        self.received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.first: float | None = None  # monotonic s of the first and last datagram either way
        self.last: float | None = None
        self.exchanges = 0
        self.failed = 0

    @classmethod
    async def open(cls, host: str, port: int, *, ack_timeout: float = 2.0,
                   seed: int | None = None) -> "AioLink":
        loop = asyncio.get_running_loop()
        family, _, _, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
        transport, proto = await loop.create_datagram_endpoint(
            _Datagrams, remote_addr=addr, family=family)
        return cls(transport, proto, ack_timeout, random.Random(seed))

    def close(self) -> None:
        self.transport.close()

    def _stamp(self) -> None:
        t = time.monotonic()
        if self.first is None:
            self.first = t
        self.last = t

    def _send(self, ex: Any) -> None:
        for datagram in ex.outgoing:
            self.transport.sendto(datagram)
            self.sent += 1
            self.bytes_sent += len(datagram)
            self._stamp()
        ex.outgoing.clear()

    def next_mid(self) -> int:
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    async def _pump(self, m: Any) -> None:
        """``coap.pump`` on the event loop."""
        q = self.proto.queue
        self._send(m)
        while not m.done:
            wait = max(0, m.deadline - now_ms()) / 1000
            try:
                data = await asyncio.wait_for(q.get(), wait)
            except asyncio.TimeoutError:
                m.on_timeout(now_ms())
            else:
                self.received += 1
                self.bytes_received += len(data)
                self._stamp()
                m.on_datagram(data, now_ms())
            self._send(m)

    async def request(self, req: Any) -> Any:
        token = os.urandom(4)
        self.exchanges += 1
        q = self.proto.queue
        while not q.empty():  # late answers to an abandoned exchange
            q.get_nowait()
        ex = coap.Exchange(req, self.next_mid(), token, now_ms(), self.rand.random, rtt=self.rtt)
        await self._pump(ex)
        if ex.failed:
            self.failed += 1
            return None
        return ex.response

    async def run(self, machine: Any) -> Any:
        """Drive a machine (``device.burst.Window``) until it stops for its caller."""
        machine.start(now_ms(), self.rtt, self.next_mid, self.rand.random)
        await self._pump(machine)
        return machine


async def drive(wake: Generator[Any, Any, Any], link: AioLink,
                stop: asyncio.Event | None = None) -> Any:
    """Run one wake over ``link``; return what the wake returns. Stopped early: None."""
    try:
        req = next(wake)
        while True:
            if stop is not None and stop.is_set():
                wake.close()
                return None
            if isinstance(req, coap.Request):
                resp = await link.request(req)
            else:
                resp = await link.run(req)
            req = wake.send(resp)
    except StopIteration as e:
        return e.value
