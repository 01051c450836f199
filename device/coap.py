"""CoAP (RFC 7252) message codec and one request/response exchange, sans-IO.

Bytes and time in, bytes and deadlines out: no sockets here, so the same core runs over a real
UDP socket (``udp.UdpLink``), an asyncio transport, or a lossy in-process link in tests.
Times are integer milliseconds from any monotonic origin.

``Exchange`` does RFC 7252 section 4.2 reliability for one request: retransmit a CON with a
doubling timeout (initial ACK_TIMEOUT * [1, ACK_RANDOM_FACTOR)), give up after MAX_RETRANSMIT,
and accept piggybacked or separate responses (ACKing a CON separate response). ``max_wait_ms``
caps the whole exchange (a battery device does not wait for ever). Given the link's
``rtt.Rtt``, ACK_TIMEOUT is its current timeout instead of the fixed figure, an answer to a
request sent once is a round-trip sample, and each expiry backs the shared timeout off.

A *machine* is anything with ``outgoing`` (datagrams to send), ``deadline`` (ms),
``on_timeout(now)``, ``on_datagram(data, now)`` and ``done``: ``Exchange`` and
``burst.Window``. ``pump`` runs one over any I/O; a link's ``run(machine)`` does that on its
socket, and ``run(gen, link)`` hands a machine an agent yields to it.
"""

CON = 0
NON = 1
ACK = 2
RST = 3

GET = 1
POST = 2
PUT = 3
DELETE = 4

ETAG = 4
OBSERVE = 6
URI_PATH = 11
CONTENT_FORMAT = 12
MAX_AGE = 14
URI_QUERY = 15
BLOCK2 = 23
BLOCK1 = 27
SIZE2 = 28
SIZE1 = 60
ECHO = 252  # RFC 9175: a gateway asks an unverified source to repeat a GET with it
UNAUTHORIZED = 0x81  # 4.01

CBOR = 60  # Content-Format application/cbor


class CoapError(ValueError):
    pass


def code(c, d):
    """code(2, 5) -> 0x45 (2.05)."""
    return (c << 5) | d


def code_str(c):
    return "%d.%02d" % (c >> 5, c & 31)


def uint(n):
    """Minimal big-endian encoding of a CoAP uint option (0 -> empty)."""
    k = 0
    while n >> (8 * k):
        k += 1
    return n.to_bytes(k, "big")


def to_uint(b):
    return int.from_bytes(bytes(b), "big") if b else 0


def block_value(num, more, szx):
    return (num << 4) | (8 if more else 0) | szx


def parse_block(v):
    return v >> 4, bool(v & 8), v & 7


class Message:
    """A decoded datagram, with the options the agent acts on parsed (None when absent):
    ``etag``, ``block2`` ((num, more, szx)), ``size2``, ``max_age``. A response is one."""

    def __init__(self, mtype, code, mid, token, options, payload):
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = options
        self.payload = payload
        self.etag = self.opt(ETAG)
        v = self.opt(BLOCK2)
        self.block2 = None if v is None else parse_block(to_uint(v))
        v = self.opt(SIZE2)
        self.size2 = None if v is None else to_uint(v)
        v = self.opt(MAX_AGE)
        self.max_age = None if v is None else to_uint(v)

    def opt(self, number):
        """The first value of option ``number``, or None."""
        for n, v in self.options:
            if n == number:
                return v
        return None


def _ext(n):
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    return 14, (n - 269).to_bytes(2, "big")


def encode(mtype, code, mid, token, options, payload):
    if len(token) > 8:
        raise CoapError("token longer than 8 bytes")
    out = bytearray((0x40 | (mtype << 4) | len(token), code))
    out.extend((mid & 0xFFFF).to_bytes(2, "big"))
    out.extend(token)
    # stable sort by number: repeated options keep their order (MicroPython's sort is not stable)
    idx = list(range(len(options)))
    idx.sort(key=lambda k: (options[k][0], k))
    last = 0
    for k in idx:
        num, val = options[k]
        dn, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        out.append((dn << 4) | ln)
        out.extend(dx)
        out.extend(lx)
        out.extend(val)
        last = num
    if payload:
        out.append(0xFF)
        out.extend(payload)
    return bytes(out)


def decode(data):
    """Parse one datagram; anything malformed raises CoapError. The payload is a memoryview
    into the datagram (bytes(...) it to keep it, or to decode CBOR byte strings as bytes)."""
    d = bytes(data)
    n = len(d)
    if n < 4:
        raise CoapError("shorter than a header")
    b0 = d[0]
    if b0 >> 6 != 1:
        raise CoapError("version is not 1")
    tkl = b0 & 15
    if tkl > 8:
        raise CoapError("token length over 8")
    mtype = (b0 >> 4) & 3
    c = d[1]
    mid = (d[2] << 8) | d[3]
    i = 4 + tkl
    if i > n:
        raise CoapError("truncated token")
    token = d[4:i]
    if c == 0 and (tkl or n > 4):
        raise CoapError("empty message with content")
    options = []
    num = 0
    payload = b""
    while i < n:
        b = d[i]
        i += 1
        if b == 0xFF:
            if i == n:
                raise CoapError("payload marker without payload")
            payload = memoryview(d)[i:]  # a view: a block is not copied out of its datagram
            break
        dn = b >> 4
        ln = b & 15
        if dn == 15 or ln == 15:
            raise CoapError("reserved option nibble 15")
        vals = []
        for x in (dn, ln):
            if x == 13:
                if i >= n:
                    raise CoapError("truncated option")
                x = d[i] + 13
                i += 1
            elif x == 14:
                if i + 2 > n:
                    raise CoapError("truncated option")
                x = ((d[i] << 8) | d[i + 1]) + 269
                i += 2
            vals.append(x)
        num += vals[0]
        if i + vals[1] > n:
            raise CoapError("truncated option value")
        options.append((num, d[i:i + vals[1]]))
        i += vals[1]
    return Message(mtype, c, mid, token, options, payload)


class Request:
    """What the agent asks for. ``path`` "f/ab12cd34" (a leading "/" is tolerated)."""

    def __init__(self, code, path, payload=b"", block2=None, con=True, options=None):
        self.code = code
        self.path = path
        self.payload = payload
        self.block2 = block2
        self.con = con
        self.options = options or []

    def encode(self, mid, token):
        opts = [(URI_PATH, s.encode()) for s in self.path.split("/") if s]
        if self.block2 is not None:
            opts.append((BLOCK2, uint(block_value(self.block2[0], False, self.block2[1]))))
        opts.extend(self.options)
        return encode(CON if self.con else NON, self.code, mid, token, opts, self.payload)


class Exchange:
    """``max_wait_ms`` None: RFC 7252's MAX_TRANSMIT_WAIT for the timeout given (93 s with the
    defaults)."""

    def __init__(self, req, mid, token, now_ms, rand, ack_timeout_ms=2000,
                 ack_random_factor=1.5, max_retransmit=4, max_wait_ms=None, rtt=None):
        self.mid = mid & 0xFFFF
        self.rtt = rtt
        self.sent_ms = now_ms
        if rtt is not None:
            ack_timeout_ms = rtt.rto
        self.token = bytes(token)
        self.con = req.con
        self.datagram = req.encode(self.mid, self.token)
        self.outgoing = [self.datagram]
        self.max_retransmit = max_retransmit
        self.retransmits = 0
        self.acked = False
        self.done = False
        self.failed = False
        self.response = None
        if max_wait_ms is None:
            max_wait_ms = int(ack_timeout_ms * ((1 << (max_retransmit + 1)) - 1)
                              * ack_random_factor)
        self.end = now_ms + max_wait_ms
        if self.con:
            self.timeout = int(ack_timeout_ms * (1 + rand() * (ack_random_factor - 1)))
            self.deadline = min(now_ms + self.timeout, self.end)
        else:
            self.timeout = None
            self.deadline = self.end

    def _sample(self, now_ms):
        """The first answer (an ACK or the response): a round-trip sample if sent once
        (Karn), else only the end of the backoff."""
        if self.rtt is not None:
            if self.retransmits:
                self.rtt.answered()
            else:
                self.rtt.sample(now_ms - self.sent_ms)

    def on_timeout(self, now_ms):
        if self.done or now_ms < self.deadline:
            return
        if self.rtt is not None and not self.acked:
            self.rtt.backoff()
        if (now_ms >= self.end or not self.con or self.acked
                or self.retransmits >= self.max_retransmit):
            self.done = self.failed = True
            self.deadline = None
        else:
            self.retransmits += 1
            self.timeout *= 2
            self.outgoing.append(self.datagram)
            self.deadline = min(now_ms + self.timeout, self.end)

    def on_datagram(self, data, now_ms):
        try:
            msg = decode(data)
        except CoapError:
            return
        t = msg.mtype
        if t == ACK or t == RST:
            if msg.mid != self.mid or self.done:
                return
            if t == RST:
                self.done = self.failed = True
                self.deadline = None
                return
            if msg.code == 0:
                if self.con and not self.acked:
                    self.acked = True  # separate response follows: stop retransmitting
                    self._sample(now_ms)
                    self.deadline = self.end
                return
            if msg.token != self.token or msg.code < 0x40:
                return
        elif msg.code < 0x40 or msg.token != self.token:  # CON or NON: a separate
            return  # response, or a stray
        elif t == CON:
            self.outgoing.append(encode(ACK, 0, msg.mid, b"", [], b""))
        if not self.done:
            self.done = True
            self.response = msg
            self.deadline = None
            if not self.acked:
                self._sample(now_ms)


def pump(m, send, recv, clock):
    """Run machine ``m`` until ``m.done`` over any I/O: ``send(datagram)``, ``recv(wait_ms) ->
    bytes or None`` (None: nothing within wait_ms), ``clock() -> ms``."""
    while True:
        out = m.outgoing
        while out:
            send(out.pop(0))
        if m.done:
            return m
        now = clock()
        wait = m.deadline - now
        if wait <= 0:
            m.on_timeout(now)
            continue
        data = recv(wait)
        now = clock()
        if data is None:
            m.on_timeout(now)
        else:
            m.on_datagram(data, now)
            data = None  # not live while the next one is received (1 KiB, a heap's largest piece)


def run(gen, link):
    """Drive an agent generator: it yields Requests and gets each response (None when the
    exchange failed: timeout or RST) back from ``gen.send``; returns its return value.
    ``link`` is any object with ``request(req) -> Message or None``; a yielded machine (not a
    ``Request``) goes to ``link.run(machine)``, and ``gen`` gets None back (it holds the
    machine). A MemoryError in the link is thrown into ``gen`` (the agent reports it as a
    result). Nothing here refers to the last request or machine while ``gen`` runs on: a
    driven window holds its sink and, through its class, its module's code."""
    resp = None
    err = None
    req = None
    try:
        while True:
            req = None
            if err is not None:
                req = gen.throw(err)
                err = None
            else:
                req = gen.send(resp)
            resp = None
            try:
                if isinstance(req, Request):
                    resp = link.request(req)
                else:
                    link.run(req)
            except MemoryError as e:
                err = e
    except StopIteration as e:
        return e.value if hasattr(e, "value") else (e.args[0] if e.args else None)
