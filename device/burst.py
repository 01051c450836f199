"""Windowed Block2 download with NON requests (RFC 9177 Q-Block2 style), sans-IO.

Stop-and-wait pays one round trip per block; on a long link that, not the bandwidth, is the
limit. ``Burst`` keeps up to ``window`` NON GETs for consecutive blocks in flight, takes the
answers in any order, and re-asks a block that stays missing after its timeout (doubling, with
a cap). Memory stays bounded: only blocks in [base, base + window) are ever asked for, so at
most ``window`` payloads wait for the caller, who ``take()``s the bytes in order.

One token per block (kept across re-requests, so a late answer to an earlier try still
counts); a fresh message id per datagram. The ETag must be the same on every block: a change
means the image under the URI changed mid-download, which raises ``BurstError``.
"""

import os

from . import coap

CONTENT = 0x45


class BurstError(ValueError):
    pass


def _randbytes(n):
    try:
        return os.urandom(n)
    except Exception:
        import random
        return bytes(random.getrandbits(8) for _ in range(n))


class Burst:
    def __init__(self, path, size, szx, window=8, timeout_ms=2000, etag=None, max_tries=20,
                 max_timeout_ms=None, rand=None, mid=None, offset=0):
        if size <= 0 or not 0 <= szx <= 6 or window < 1:
            raise ValueError("bad size, szx or window")
        if offset % (1 << (szx + 4)) or not 0 <= offset < size:
            raise ValueError("resume offset must be a block boundary inside the image")
        self.path = path
        self.size = size
        self.szx = szx
        self.bsize = 1 << (szx + 4)
        self.blocks = (size + self.bsize - 1) // self.bsize
        self.window = window
        self.timeout_ms = timeout_ms
        self.max_timeout_ms = max_timeout_ms or 8 * timeout_ms
        self.max_tries = max_tries
        self.etag = etag
        self.rand = rand or _randbytes
        self.mid = int.from_bytes(self.rand(2), "big") if mid is None else mid
        self.base = offset >> (szx + 4)  # first block the caller has not taken
        self.next = self.base  # first block never asked for
        self.pending = {}  # num -> [token, deadline, tries, timeout]
        self.tokens = {}  # token -> num
        self.got = {}  # num -> payload, waiting to be taken
        self.outgoing = []
        self.deadline = None
        self.requests = 0  # datagrams sent (first tries and re-requests)
        self.failed = False
        self.done = False

    def _send(self, num, token):
        self.mid = (self.mid + 1) & 0xFFFF
        req = coap.Request(coap.GET, self.path, block2=(num, self.szx), con=False)
        self.outgoing.append(req.encode(self.mid, token))
        self.requests += 1

    def poll(self, now_ms):
        """Re-ask overdue blocks, fill the window, and set ``deadline`` (next call due)."""
        if self.done or self.failed:
            self.deadline = None
            return
        for num in sorted(self.pending):
            p = self.pending[num]
            if now_ms >= p[1]:
                if p[2] >= self.max_tries:
                    self.failed = True
                    self.deadline = None
                    return
                p[2] += 1
                p[3] = min(p[3] * 2, self.max_timeout_ms)
                p[1] = now_ms + p[3]
                self._send(num, p[0])
        while self.next < self.blocks and self.next < self.base + self.window:
            num = self.next
            self.next += 1
            token = bytes(self.rand(4))
            while token in self.tokens:
                token = bytes(self.rand(4))
            self.tokens[token] = num
            self.pending[num] = [token, now_ms + self.timeout_ms, 1, self.timeout_ms]
            self._send(num, token)
        self.deadline = min(p[1] for p in self.pending.values()) if self.pending else None

    def on_datagram(self, data, now_ms):
        """Take one datagram; returns [(offset, payload)] of blocks newly received (maybe
        empty: strays, duplicates and malformed datagrams are ignored)."""
        try:
            msg = coap.decode(data)
        except coap.CoapError:
            return []
        if msg.mtype == coap.CON:
            self.outgoing.append(coap.encode(coap.ACK, 0, msg.mid, b"", [], b""))
        if msg.code < 0x40 or msg.mtype == coap.RST:
            return []
        num = self.tokens.get(msg.token)
        if num is None:
            return []
        resp = coap.Response(msg)
        if resp.code != CONTENT:
            raise BurstError("block %d answered %s" % (num, coap.code_str(resp.code)))
        if resp.block2 is None or resp.block2[0] != num or resp.block2[2] != self.szx:
            raise BurstError("block %d answered with Block2 %r" % (num, resp.block2))
        if self.etag is None:
            self.etag = resp.etag
        elif resp.etag != self.etag:
            raise BurstError("ETag changed at block %d: the image changed" % num)
        if resp.size2 is not None and resp.size2 != self.size:
            raise BurstError("Size2 %d, expected %d" % (resp.size2, self.size))
        off = num * self.bsize
        if len(resp.payload) != min(self.bsize, self.size - off):
            raise BurstError("block %d has %d bytes" % (num, len(resp.payload)))
        del self.tokens[msg.token]
        del self.pending[num]
        self.got[num] = resp.payload
        return [(off, resp.payload)]

    def take(self):
        """(offset, bytes) of the blocks now contiguous from the last take (b"" if none);
        taking frees window room for the next ``poll``."""
        off = self.base * self.bsize
        parts = []
        while self.base in self.got:
            parts.append(self.got.pop(self.base))
            self.base += 1
        if self.base == self.blocks:
            self.done = True
            self.deadline = None
        return off, b"".join(parts)


def drive(b, send, recv, clock, write):
    """Run ``b`` to its end over any I/O (as ``coap.drive``): ``write(offset, data)`` gets the
    bytes in order. Returns True when all came, False when a block ran out of tries; a
    ``BurstError`` (ETag changed, error answer) propagates."""
    while True:
        off, data = b.take()
        if data:
            write(off, data)
        if b.done:
            return True
        b.poll(clock())
        out = b.outgoing
        while out:
            send(out.pop(0))
        if b.failed:
            return False
        wait = b.deadline - clock()
        if wait > 0:
            data = recv(wait)
            if data is not None:
                b.on_datagram(data, clock())


def fetch(host, port, path, size, write, szx=6, window=8, timeout_ms=2000, etag=None,
          max_tries=20):
    """Blocking download over a UDP socket (``udp.UdpLink`` supplies socket and clock)."""
    from . import udp

    link = udp.UdpLink(host, port)
    try:
        b = Burst(path, size, szx, window=window, timeout_ms=timeout_ms, etag=etag,
                  max_tries=max_tries)
        return drive(b, link._send, link._recv, link.clock, write)
    finally:
        link.close()
