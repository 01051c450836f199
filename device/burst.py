"""Windowed Block2 download with NON requests (RFC 9177 Q-Block2 in spirit), sans-IO.

Stop-and-wait pays a round trip per block, and on a lossy link a fixed timeout per lost block
on top. ``Window`` keeps up to ``cwnd`` NON GETs in flight for blocks in [base, base +
max_window) and hands every new block to ``sink.put(offset, payload)`` as it comes, in any
order (the sink writes it at its offset; ``sink.advance(offset)`` tells it the prefix up to
``offset`` is complete). Nothing is held here but a few bytes per block of the window.

Loss recovery without timers: an answer to a request sent after block j's latest request,
``DUPTHRESH`` sends later, while j is still missing, means j's request or answer was lost: j is
asked again at once. The timer (the link's ``rtt.Rtt`` timeout, which each expiry doubles
until the next sample) is only for the tail, where no later request exists. Duplicates are
dropped.

Congestion control, AIMD per round trip: slow start (+1 per answered block) up to the first
loss, then +``INCREASE`` blocks per round trip; at most once per round a gap loss takes 1/8
off the window and a timeout halves it (and backs the shared timeout off). The gentle 1/8
keeps a radio link with random loss busy (the window settles near INCREASE x 8); a timeout, the
sign of a queue dropping whole rounds, still halves it.

One token per block, ``salt + block number`` (no table of tokens), kept across re-requests so
a late answer to an earlier try still counts; message ids come from the link. The ETag must be
the same on every block. A CON report can ride along (``ask``): the link drives both, so a
progress report costs no pause in the window.

The link calls ``start(now_ms, rtt, next_mid)`` and then drives the machine (``coap.pump``)
until ``done``: all blocks in, ``verdict`` set (an error), the side exchange over, or
``step`` more bytes complete since this run began (the agent persists the offset then).
"""

from . import coap
from .fetch import CONTENT, CORRUPT, GONE, RESTART

DUPTHRESH = 3  # later-sent answers that declare a missing block lost (reordering tolerance)
INCREASE = 2  # blocks added to the window per round trip after slow start
MIN_WINDOW = 2

FREE = 0  # ring slot states
ASKED = 1
GOT = 2

FAILED = 6  # verdict: a block ran out of tries (the fetch verdicts otherwise)


class Window:
    def __init__(self, path, size, szx, sink, offset=0, etag=None, max_window=32,
                 init_window=4, max_tries=12, step=16384, salt=0):
        if size <= 0 or not 0 <= szx <= 6 or max_window < 1:
            raise ValueError("bad size, szx or window")
        bs = 1 << (szx + 4)
        if offset % bs or not 0 <= offset < size:
            raise ValueError("resume offset must be a block boundary inside the image")
        self.path = path
        self.size = size
        self.szx = szx
        self.bsize = bs
        self.blocks = (size + bs - 1) // bs
        self.sink = sink
        self.etag = etag
        self.max_window = max_window
        self.max_tries = max_tries
        self.step = step
        self.salt = salt & 0xFFFFFFFF
        self.base = offset // bs  # first block not received
        self.next = self.base  # first block never asked for
        w = max_window
        self._state = bytearray(w)  # ring, indexed by block % max_window
        self._tries = bytearray(w)
        self._seq = [0] * w  # send sequence number of the block's latest request
        self._ms = [0] * w  # when it was sent
        self.cwnd = min(init_window, w)
        self.ssthresh = w
        self._acc = 0  # congestion avoidance: answered blocks towards the next +1
        self.inflight = 0
        self.sent = 0  # send sequence (every block request)
        self.hi = 0  # highest send sequence answered
        self.recover = 0  # send sequence at the last decrease: one decrease per round
        self.rtt = None
        self.next_mid = None
        self.side = None  # coap.Exchange riding along (a report)
        self._ask = None
        self._asked = 0
        self.side_response = None
        self.outgoing = []
        self.deadline = None
        self.done = False
        self.verdict = None  # None, or GONE / RESTART / CORRUPT / FAILED
        self.why = ""
        self.mark = self.base  # block count at the start of this run
        # accounting for the energy figure
        self.requests = 0
        self.rerequests = 0
        self.gap_losses = 0
        self.timeouts = 0
        self.duplicates = 0

    @property
    def complete(self):
        return self.base >= self.blocks

    @property
    def offset(self):
        """Bytes complete from the start of the image (what may be persisted)."""
        return min(self.base * self.bsize, self.size)

    def ask(self, req):
        """Send CON request ``req`` (a report) along with the blocks in the next run; its answer
        (None: it failed) is ``side_response`` when the run ends."""
        self._ask = req

    # -- the machine -------------------------------------------------------------------------
    def start(self, now_ms, rtt, next_mid, rand=None):
        self.rtt = rtt
        self.next_mid = next_mid
        self.done = False
        self.mark = self.base
        self.side_response = None
        if self._ask is not None:
            req, self._ask = self._ask, None
            self._asked += 1  # a block's token is salt + num < salt + 2**31: never this one
            token = ((self.salt + 0x80000000 + self._asked) & 0xFFFFFFFF).to_bytes(4, "big")
            self.side = coap.Exchange(req, next_mid(), token, now_ms, rand or _half, rtt=rtt)
            self.outgoing.extend(self.side.outgoing)
            self.side.outgoing = []
        self._fill(now_ms)
        self._settle()

    def _send(self, num, now_ms):
        i = num % self.max_window
        self.sent += 1
        self._seq[i] = self.sent
        self._ms[i] = now_ms
        self._tries[i] += 1
        self.requests += 1
        req = coap.Request(coap.GET, self.path, block2=(num, self.szx), con=False)
        token = ((self.salt + num) & 0xFFFFFFFF).to_bytes(4, "big")
        self.outgoing.append(req.encode(self.next_mid(), token))

    def _fill(self, now_ms):
        while (self.inflight < self.cwnd and self.next < self.blocks
               and self.next < self.base + self.max_window):
            i = self.next % self.max_window
            self._state[i] = ASKED
            self._tries[i] = 0
            self.inflight += 1
            self._send(self.next, now_ms)
            self.next += 1

    def _resend(self, num, now_ms):
        i = num % self.max_window
        if self._tries[i] >= self.max_tries:
            self._end(FAILED, "block %d: no answer after %d tries" % (num, self._tries[i]))
            return
        self.rerequests += 1
        self._send(num, now_ms)

    def _decrease(self, seq, halve):
        if seq <= self.recover:
            return  # this round already paid
        self.recover = self.sent
        c = self.cwnd
        c = c // 2 if halve else c - max(1, c // 8)
        self.cwnd = self.ssthresh = max(MIN_WINDOW, c)
        self._acc = 0

    def _end(self, verdict, why):
        self.verdict = verdict
        self.why = why
        self.done = True

    def _settle(self):
        """Set ``deadline`` and ``done`` after an event."""
        if self.side is not None:
            self.outgoing.extend(self.side.outgoing)
            self.side.outgoing = []
            if self.side.done:
                self.side_response = None if self.side.failed else self.side.response
                self.side = None
                self.done = True
        if self.verdict is not None or self.complete:
            self.done = True
        if (self.base - self.mark) * self.bsize >= self.step:
            self.done = True
        d = None
        if not self.complete:
            rto = self.rtt.rto
            for num in range(self.base, self.next):
                i = num % self.max_window
                if self._state[i] == ASKED:
                    t = self._ms[i] + rto
                    if d is None or t < d:
                        d = t
        if self.side is not None and (d is None or self.side.deadline < d):
            d = self.side.deadline
        self.deadline = d
        if d is None and not self.done:
            self._end(FAILED, "nothing in flight")  # cannot happen: the window always asks

    def on_timeout(self, now_ms):
        if self.side is not None:
            self.side.on_timeout(now_ms)
        if not self.done:
            rto = self.rtt.rto
            fired = False
            for num in range(self.base, self.next):
                i = num % self.max_window
                if self._state[i] == ASKED and now_ms >= self._ms[i] + rto:
                    if not fired:
                        fired = True
                        self.timeouts += 1
                        self.rtt.backoff()
                        self._decrease(self._seq[i], True)
                    self._resend(num, now_ms)
                    if self.verdict is not None:
                        break
        self._settle()

    def on_datagram(self, data, now_ms):
        try:
            msg = coap.decode(data)
        except coap.CoapError:
            return
        if msg.mtype == coap.CON:
            self.outgoing.append(coap.encode(coap.ACK, 0, msg.mid, b"", [], b""))
        if self.side is not None and (msg.mtype >= coap.ACK or msg.token == self.side.token):
            self.side.on_datagram(data, now_ms)
        elif msg.code >= 0x40 and len(msg.token) == 4 and not self.done:
            self._block(msg, now_ms)
        self._settle()

    def _block(self, msg, now_ms):
        num = (int.from_bytes(msg.token, "big") - self.salt) & 0xFFFFFFFF
        if not self.base <= num < self.next:
            if num < self.base:
                self.duplicates += 1
            return
        i = num % self.max_window
        if self._state[i] != ASKED:
            self.duplicates += 1
            return
        resp = coap.Response(msg)
        if resp.code != CONTENT:
            if 0x80 <= resp.code < 0xA0 and resp.code not in (0x88, 0x8D):
                self._end(GONE, "block %d answered %s" % (num, coap.code_str(resp.code)))
            return  # 5.xx: the timer asks again
        b2 = resp.block2
        if b2 is None or b2[0] != num or b2[2] != self.szx:
            self._end(CORRUPT, "block %d answered with Block2 %r" % (num, b2))
            return
        if resp.etag is not None:
            etag = bytes(resp.etag)
            if self.etag is None:
                self.etag = etag
            elif etag != self.etag:
                self._end(RESTART, "ETag changed at block %d: the image changed" % num)
                return
        if resp.size2 is not None and resp.size2 != self.size:
            self._end(CORRUPT, "Size2 %d, expected %d" % (resp.size2, self.size))
            return
        off = num * self.bsize
        if len(resp.payload) != min(self.bsize, self.size - off):
            self._end(CORRUPT, "block %d has %d bytes" % (num, len(resp.payload)))
            return
        seq = self._seq[i]
        if self._tries[i] == 1:
            self.rtt.sample(now_ms - self._ms[i])  # Karn: asked once
        else:
            self.rtt.answered()
        self._state[i] = GOT
        self.inflight -= 1
        self.sink.put(off, resp.payload)
        # congestion window: slow start, then INCREASE per round trip
        if self.cwnd < self.ssthresh:
            self.cwnd += 1
        else:
            self._acc += INCREASE
            if self._acc >= self.cwnd:
                self._acc -= self.cwnd
                self.cwnd += 1
        if self.cwnd > self.max_window:
            self.cwnd = self.max_window
        # the contiguous prefix
        moved = False
        while self.base < self.next and self._state[self.base % self.max_window] == GOT:
            self._state[self.base % self.max_window] = FREE
            self.base += 1
            moved = True
        if moved:
            self.sink.advance(self.offset)
        # gap detection: blocks asked before this answer's request, DUPTHRESH sends back
        if seq > self.hi:
            self.hi = seq
        lost = False
        for n in range(self.base, self.next):
            j = n % self.max_window
            if self._state[j] == ASKED and self._seq[j] + DUPTHRESH <= self.hi:
                if not lost:
                    lost = True
                    self._decrease(self._seq[j], False)
                self.gap_losses += 1
                self._resend(n, now_ms)
                if self.verdict is not None:
                    return
        self._fill(now_ms)


def _half():
    return 0.5
