"""Per-source-address rate limit on the device bind: a token bucket per host, checked on the raw
datagram before anything is parsed, so a flood costs one dict lookup per datagram.

Over the limit a datagram is dropped, not answered: an answer (5.03 + Max-Age) would cost as
much as serving it and would reflect traffic to a spoofed source, while a real device's CoAP
stack retransmits a CON with exponential backoff, which is exactly the slowing down wanted.
The table of hosts is bounded (least recently seen evicted), so spoofed source addresses cannot
grow it. Loopback sources are exempt unless asked otherwise: local users of the host are
trusted like on the control API, and the simulator and benchmarks run many devices from
127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fota.gateway")

MAX_HOSTS = 4096  # buckets kept; beyond this the least recently seen host is forgotten
DEFAULT_RATE = 200.0  # datagrams per second per host (a device fetching 1 KiB blocks over a
# radio link sends a few dozen; 200 leaves room for NATs with several devices behind them)
LOG_EVERY = 60.0  # seconds between "dropping" log lines per host


def _host_of(address: Any) -> str:
    host = address[0] if isinstance(address, tuple) else str(address)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class RateLimiter:
    """``allow(address)`` is True while the host has tokens; refills ``rate`` per second up to
    ``burst``."""

    def __init__(self, rate: float = DEFAULT_RATE, burst: float | None = None, *,
                 limit_loopback: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self.limit_loopback = limit_loopback
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # host -> [tokens, t, logged]
        self.dropped = 0

    def allow(self, address: Any) -> bool:
        host = _host_of(address)
        b = self._buckets.get(host)
        now = self.clock()
        if b is None:
            if not self.limit_loopback and _is_loopback(host):
                return True
            b = self._buckets[host] = [self.burst, now, 0.0]
            if len(self._buckets) > MAX_HOSTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(host)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        self.dropped += 1
        if now - b[2] >= LOG_EVERY:
            b[2] = now
            log.warning("rate limit: dropping datagrams from %s (over %g/s)", host, self.rate,
                        extra={"fields": {"event": "rate_limit", "host": host}})
        return False


def guard(ctx: Any, limiter: RateLimiter | None) -> None:
    """Wrap the datagram entry of an aiocoap server context's UDP transport: rate-limit first
    (when a limiter is given), and drop any datagram aiocoap's decoder fails on with something
    other than its own ``UnparsableMessage`` (0.4.17 raises UnicodeDecodeError from a Uri-Path
    that is not UTF-8 straight into the event loop: a traceback per datagram, found by
    bench/fuzz.py)."""
    (tman,) = ctx.request_interfaces
    iface = tman.token_interface.message_interface
    inner = iface.datagram_msg_received

    def datagram_msg_received(data: bytes, ancdata: list, flags: int, address: Any) -> None:
        if limiter is not None and not limiter.allow(address):
            return
        try:
            inner(data, ancdata, flags, address)
        except (UnicodeError, ValueError) as e:
            log.debug("dropped an undecodable datagram from %s: %s", _host_of(address), e)

    iface.datagram_msg_received = datagram_msg_received
