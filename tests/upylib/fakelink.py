"""An in-process, lossy CoAP link with a virtual clock (runs on MicroPython and CPython).

``LossyLink(handler, loss=0.2, seed=1)`` implements ``Link.request`` by running a real
``coap.Exchange`` whose datagrams are really encoded, dropped by a seeded generator (the same
sequence on both interpreters), decoded by ``handler`` on the "server" side, and answered with
piggybacked ACKs. Time is virtual (``link.now`` ms), so retransmission takes no wall time.
``link.stats``: datagrams sent/dropped each way and retransmissions.
``block_server(image, etag)`` is a handler serving ``image`` by Block2 at any path.
"""

from device import coap


class Lcg:
    """Deterministic PRNG (numbers from Numerical Recipes), identical everywhere."""

    def __init__(self, seed):
        self.x = seed & 0xFFFFFFFF

    def random(self):
        self.x = (1664525 * self.x + 1013904223) & 0xFFFFFFFF
        return self.x / 4294967296


class LossyLink:
    def __init__(self, handler, loss=0.0, seed=1, latency_ms=20, ack_timeout_ms=2000,
                 max_wait_ms=None, drop=()):
        self.handler = handler
        self.loss = loss
        self.prng = Lcg(seed)
        self.latency = latency_ms
        self.ack_timeout_ms = ack_timeout_ms
        self.max_wait_ms = max_wait_ms
        self.drop = drop  # indices (counting every datagram, both ways) to drop for sure
        self.now = 0
        self.mid = 100
        self.n = 0
        self.stats = {"to_server": 0, "to_device": 0, "dropped": 0, "retransmits": 0,
                      "failed": 0}

    def _lost(self):
        i = self.n
        self.n += 1
        if i in self.drop or self.prng.random() < self.loss:
            self.stats["dropped"] += 1
            return True
        return False

    def request(self, req):
        self.mid = (self.mid + 1) & 0xFFFF
        token = self.mid.to_bytes(2, "big")
        ex = coap.Exchange(req, self.mid, token, self.now, self.prng.random,
                           ack_timeout_ms=self.ack_timeout_ms, max_wait_ms=self.max_wait_ms)
        inbox = []

        def send(data):
            self.stats["to_server"] += 1
            if self._lost():
                return
            m = coap.decode(data)
            if m.mtype != coap.CON and m.mtype != coap.NON:
                return
            ans = self.handler(m)
            if ans is None:
                return
            c, opts, payload = ans
            mtype = coap.ACK if m.mtype == coap.CON else coap.NON
            out = coap.encode(mtype, c, m.mid, m.token, opts, payload)
            self.stats["to_device"] += 1
            if not self._lost():
                inbox.append((self.now + 2 * self.latency, out))

        def recv(wait_ms):
            if inbox and inbox[0][0] <= self.now + wait_ms:
                t, d = inbox.pop(0)
                if t > self.now:
                    self.now = t
                return d
            self.now += wait_ms
            return None

        def clock():
            return self.now

        coap.pump(ex, send, recv, clock)
        resp = None if ex.failed else ex.response
        self.stats["retransmits"] += ex.retransmits
        if resp is None:
            self.stats["failed"] += 1
        return resp


def block_server(image, etag):
    """Handler: GET with Block2 (num, szx) -> 2.05 slice with ETag, Block2 and Size2."""

    def handle(m):
        if m.code != coap.GET:
            return coap.code(4, 5), [], b""
        v = m.opt(coap.BLOCK2)
        num, _, szx = coap.parse_block(coap.to_uint(v)) if v is not None else (0, 0, 6)
        size = 16 << szx
        start = num * size
        if start >= len(image) and start > 0:
            return coap.code(4, 2), [], b""
        chunk = image[start:start + size]
        more = start + size < len(image)
        opts = [(coap.ETAG, etag), (coap.BLOCK2, coap.uint(coap.block_value(num, more, szx))),
                (coap.SIZE2, coap.uint(len(image)))]
        return coap.code(2, 5), opts, chunk

    return handle


def download(path, szx=6):
    """Agent-style generator for ``coap.run``: fetch ``path`` block by block, return bytes."""
    out = bytearray()
    num = 0
    failures = 0
    while True:
        resp = yield coap.Request(coap.GET, path, block2=(num, szx))
        if resp is None:
            failures += 1
            if failures > 20:
                raise OSError("download failed")
            continue
        if resp.code != coap.code(2, 5) or resp.block2 is None or resp.block2[0] != num:
            raise ValueError("unexpected response %r" % (resp,))
        out.extend(resp.payload)
        if not resp.block2[1]:
            return bytes(out)
        num += 1
