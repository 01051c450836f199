"""Blocking UDP transport for ``coap.Exchange``: the ``Link`` a board (or the unix port) uses.

The link owns what outlives one exchange: the message id counter and the round-trip estimate
(``rtt.Rtt``, the ACK timeout its first guess), fed by every exchange and every block.

The peer address comes only from ``socket.getaddrinfo(host, port)[0][-1]``: the unix port's
addresses are raw sockaddr bytes, so nothing here builds or parses one. Replies are read with
``recv`` (the Exchange matches them by message id and token, not by source address). Not
``readinto`` into one buffer: on the unix port that is a stream read and joins queued datagrams.
A MemoryError in ``recv`` goes up to ``coap.run``, which throws it into the agent (a result).
"""

import os
import time

try:
    import socket
except ImportError:  # very old MicroPython
    import usocket as socket
import select

from . import coap, rtt

try:
    _ticks = time.ticks_ms
    _diff = time.ticks_diff
except AttributeError:  # CPython
    _ticks = None


def _randbytes(n):
    try:
        return os.urandom(n)
    except Exception:
        import random
        return bytes(random.getrandbits(8) for _ in range(n))


def default_rand():
    return int.from_bytes(_randbytes(2), "big") / 65536


class UdpLink:
    def __init__(self, host, port, timeout_scale=1.0, rand=None, max_wait_ms=None):
        ai = socket.getaddrinfo(host, port)[0]
        self.addr = ai[-1]
        self.sock = socket.socket(ai[0], socket.SOCK_DGRAM)
        self.poll = select.poll()
        self.poll.register(self.sock, select.POLLIN)
        self.rand = rand or default_rand
        self.ack_timeout_ms = int(2000 * timeout_scale)
        self.rtt = rtt.Rtt(self.ack_timeout_ms)
        self.max_wait_ms = max_wait_ms
        self.mid = int.from_bytes(_randbytes(2), "big")
        self._now = 0
        self._last = _ticks() if _ticks else None

    def clock(self):
        """Monotonic milliseconds (ticks_ms wraps; this does not)."""
        if _ticks is None:
            return int(time.monotonic() * 1000)
        t = _ticks()
        self._now += _diff(t, self._last)
        self._last = t
        return self._now

    def _send(self, data):
        try:
            self.sock.sendto(data, self.addr)
        except OSError:
            pass  # unreachable now: the exchange times out and the caller retries later

    def _recv(self, wait_ms):
        if not self.poll.poll(max(1, int(wait_ms))):
            return None
        try:
            return self.sock.recv(1280)
        except OSError:
            return None

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def request(self, req):
        ex = coap.Exchange(req, self.next_mid(), _randbytes(4), self.clock(), self.rand,
                           max_wait_ms=self.max_wait_ms, rtt=self.rtt)
        coap.pump(ex, self._send, self._recv, self.clock)
        return None if ex.failed else ex.response

    def run(self, machine):
        """Drive a machine (``burst.Window``) until it stops for its caller."""
        machine.start(self.clock(), self.rtt, self.next_mid, self.rand)
        return coap.pump(machine, self._send, self._recv, self.clock)

    def close(self):
        self.sock.close()
