"""Rate limits on the device bind, checked on the raw datagram before anything is parsed.

Three budgets, each a token bucket (``rate`` per second, up to ``burst``): per host (IPv4 /32,
IPv6 /64: one subscriber's allocation), per network (IPv4 /24, IPv6 /48: one site), and one
global budget for sources that have not proven their address (``sources.py``), so that a flood
from many spoofed or rotating sources costs a bounded share of the CPU, and verified devices
keep their own allowance whatever the flood does.

The host and network buckets live in fixed tables indexed by a keyed hash (Python's per-process
randomised ``hash`` of the prefix bytes), two slots per prefix: memory is fixed at start, and
nothing is ever evicted, so a host cannot get a fresh allowance by making the gateway forget it
(the old LRU table of 4,096 hosts could be cycled by 5,000 rotating sources). A prefix is
charged in both its slots and allowed while either still holds a token: an attacker that shares
one slot with an honest host drains that slot only.

Over a budget a datagram from a source that has not proven its address is dropped, not
answered: an answer would reflect traffic to a spoofed source. A CON request is dropped too:
its CoAP layer retransmits with exponential back-off, which is the slowing down wanted. A NON
GET (a windowed download's block request) from a verified source (a device that answered an
Echo) over its host or network budget is answered with a 5.03 and Max-Age (``slow_down``:
``refusal_age`` seconds, the time its host bucket takes to refill half its burst, rounded
down: 0 with the defaults, and the device waits one round trip; at most ``total_rate`` such
answers a second over all sources). Dropped, a NON block request looks like radio loss to the
device's window, which asks again at once (measured: 3.3 datagrams per block for 20 devices
behind one address); the 5.03 tells it to wait and to shrink the window (device/burst.py).
The answer is smaller than the request: no amplification. Budgets count datagrams, with a
burst allowance: the default 64 passes a device's full window of 32 NON block GETs twice over.
Loopback is exempt unless asked (``limit_loopback``): local users are trusted like on the
control API, and the simulator and benchmarks run many devices from 127.0.0.1.
"""

from __future__ import annotations

import logging
import socket
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("fota.gateway")

DEFAULT_RATE = 200.0  # datagrams/s per host: a windowed download of 1 KiB blocks needs a few
# dozen; 200 leaves room for a NAT with several devices behind it
DEFAULT_BURST = 64.0  # datagrams: a window of 16 NON block GETs plus retransmissions, x2
DEFAULT_NET_RATE = 1000.0  # datagrams/s per /24 (IPv4) or /48 (IPv6)
DEFAULT_TOTAL_RATE = 2000.0  # datagrams/s over all sources that have not proven their address
DEFAULT_SLOTS = 1 << 16  # buckets per table (x2 tables, 16 bytes each: 2 MiB in all)
LOG_EVERY = 60.0  # seconds between "dropping" log lines per budget kind

_V4MAPPED = b"\0" * 10 + b"\xff\xff"


def host_key(host: str) -> bytes:
    """The packed address: 4 bytes for IPv4 (also v4-mapped IPv6), 16 for IPv6."""
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return socket.inet_pton(socket.AF_INET, host)
    return packed[12:] if packed[:12] == _V4MAPPED else packed


def prefixes(key: bytes) -> tuple[bytes, bytes]:
    """(host prefix, network prefix) of a packed address: /32 and /24, or /64 and /48."""
    if len(key) == 4:
        return key, key[:3]
    return key[:8], key[:6]


def is_loopback(key: bytes) -> bool:
    return key[0] == 127 if len(key) == 4 else key == b"\0" * 15 + b"\1"


def exempt(key: bytes, limit_loopback: bool) -> bool:
    """Loopback sources skip the rate limits and source verification unless --limit-loopback."""
    return not limit_loopback and is_loopback(key)


@dataclass(frozen=True)
class Budgets:
    rate: float = DEFAULT_RATE
    burst: float = DEFAULT_BURST
    net_rate: float = DEFAULT_NET_RATE
    total_rate: float = DEFAULT_TOTAL_RATE
    slots: int = DEFAULT_SLOTS

    def net_burst(self) -> float:
        return max(self.burst, self.net_rate * self.burst / self.rate) if self.rate else 0.0

    def total_burst(self) -> float:
        return max(self.burst, self.total_rate * self.burst / self.rate) if self.rate else 0.0


class _Table:
    """Token buckets in two flat arrays, indexed by a keyed hash: fixed memory, no eviction."""

    def __init__(self, slots: int, rate: float, burst: float) -> None:
        self.slots, self.rate, self.burst = slots, rate, burst
        self.tokens = array("d", [burst]) * slots
        self.stamp = array("d", [0.0]) * slots

    def _take(self, i: int, now: float) -> bool:
        t = self.tokens[i] + (now - self.stamp[i]) * self.rate
        if t > self.burst:
            t = self.burst
        self.stamp[i] = now
        if t >= 1.0:
            self.tokens[i] = t - 1.0
            return True
        self.tokens[i] = t
        return False

    def take(self, prefix: bytes, now: float) -> bool:
        h = hash(prefix)
        a = self._take(h % self.slots, now)
        b = self._take((h >> 20) % self.slots, now)
        return a or b


class RateLimiter:
    """``allow(key, verified)``: whether a datagram from the packed address ``key`` may pass."""

    def __init__(self, budgets: Budgets = Budgets(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budgets = budgets
        self.clock = clock
        self.hosts = _Table(budgets.slots, budgets.rate, budgets.burst)
        self.nets = _Table(budgets.slots, budgets.net_rate, budgets.net_burst())
        self.total = _Table(1, budgets.total_rate, budgets.total_burst())
        self.signals = _Table(1, budgets.total_rate, budgets.total_burst())  # 5.03 answers
        self.refusal_age = int(budgets.burst / 2 / budgets.rate) if budgets.rate else 60
        self.dropped = {"host": 0, "net": 0, "total": 0}
        self.slowed = 0  # 5.03 answers sent instead of dropping
        self._kind = ""  # the budget the last refused datagram hit
        self._logged = {"host": -LOG_EVERY, "net": -LOG_EVERY, "total": -LOG_EVERY}

    def allow(self, key: bytes, verified: bool = False) -> bool:
        """Charge every budget that applies; False (drop) if one of them is empty."""
        now = self.clock()
        host, net = prefixes(key)
        if not self.hosts.take(host, now):
            return self._drop("host", key, now)
        if not self.nets.take(net, now):
            return self._drop("net", key, now)
        if not verified and not self.total._take(0, now):
            return self._drop("total", key, now)
        return True

    def slow_down(self, verified: bool) -> int | None:
        """After ``allow`` refused a datagram: the Max-Age (s) of a 5.03 to answer it with, or
        None to stay silent (an unverified source, the global budget, or too many 5.03s)."""
        if not verified or self._kind == "total" or not self.signals._take(0, self.clock()):
            return None
        self.slowed += 1
        return self.refusal_age

    def _drop(self, kind: str, key: bytes, now: float) -> bool:
        self._kind = kind
        self.dropped[kind] += 1
        if now - self._logged[kind] >= LOG_EVERY:
            self._logged[kind] = now
            b = self.budgets
            rate = {"host": b.rate, "net": b.net_rate, "total": b.total_rate}[kind]
            host = socket.inet_ntop(socket.AF_INET if len(key) == 4 else socket.AF_INET6, key)
            log.warning("rate limit: dropping datagrams from %s (%s budget %g/s; %d dropped "
                        "by it so far)", host, kind, rate, self.dropped[kind],
                        extra={"fields": {"event": "rate_limit", "host": host, "budget": kind}})
        return False


def describe(b: Budgets) -> str:
    return (f"{b.rate:g}/s per host (burst {b.burst:g}), {b.net_rate:g}/s per /24 or /48 "
            f"(burst {b.net_burst():g}), {b.total_rate:g}/s unverified in total "
            f"(burst {b.total_burst():g})")
