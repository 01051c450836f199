"""Windowed Block2 download with NON requests (RFC 9177 Q-Block2 in spirit), sans-IO.

Stop-and-wait pays a round trip per block, and on a lossy link a fixed timeout per lost block
on top. ``Window`` keeps up to ``cwnd`` (at most ``max_window``) NON GETs in flight for blocks
in [base, base + SPAN x max_window) and hands every new block to ``sink.put(offset, payload)`` as
it comes, in any order (the sink writes it at its offset; ``sink.advance(offset)`` tells it
the prefix up to ``offset`` is complete). Nothing is held here but a few bytes per block.

Loss recovery without the retransmission timer (RACK, RFC 8985, in blocks): once a block
requested after block j's latest request has been answered, j is overdue as soon as it has
been out one SRTT and is asked again then, at once if that time has already passed. The
reorder window (RACK.reo_wnd) is nothing until an answer overtakes an earlier request's, then
SRTT/4, and SRTT/4 more (up to SRTT) whenever an earlier try's answer comes within half a
round trip of a re-ask: the re-ask was needless (RFC 8985's DSACK rule, by time). An answer
sooner than a round trip after a re-ask vouches for nothing sent after the first try. At the
tail, where no later request exists, the retransmission timer fires, never sooner than SRTT +
SRTT/4 (on a steady link SRTT + 4 RTTVAR fell to SRTT + 10 ms and fired just before whole
bursts of answers), and asks again for the newest expired block only (its answer lets RACK
find the others); a probe (RFC 8985 7) re-asks the newest block two SRTT after the last
request, once per answer and without backing off (without it downloads at 30 % loss each way
took 7 % longer on average and the slowest of 300 half as long again: bench/window_rounds.py).
A timer that fires while answers keep coming is one lost block, not silence: the shared
timeout backs off only when nothing was answered since the request. A report riding along
retransmits on its own doubling timer but does not back the shared timeout off (one timer
backs off per silence, as RFC 6298's one per connection). In the last round the window's idle slots ask its blocks again
(``_fill``). Duplicates are dropped.

Congestion control, per round (the blocks asked for in one round trip). The first window is
what ``_INIT_RATE`` (half the gateway's per-host budget) sends in one SRTT, 16 to
``max_window`` blocks: 32 at 1.5 s RTT, 16 at 100 ms. Slow start (+1 per answered block)
until the first loss, which takes that round's loss fraction off (at most half: random loss
costs its share, a queue overflowing after a doubling about what the doubling added); then
+``_INCREASE`` blocks per round that loses no more than usual. A round whose loss rate is
``_MARGIN`` above the link's usual one (a moving average over rounds; below a quarter, also two
standard deviations of a round that size) takes a quarter off, and a second timeout in a row,
four SRTT after the last answer, halves it. A radio link's steady random loss is thus not read
as congestion (TCP's rule would hold the window near 2 blocks at 30 % loss each way), while
drops that grow with the sending rate are; above half of a round lost (``_LOSS_CAP``) loss
always counts. ``max_tries`` timeouts in a row without an answer: ``FAILED``.

A 5.03 with Max-Age (gateway/ratelimit.py: the per-host budget of our address is spent) is
the gateway's explicit congestion signal: the block keeps its slot and is asked again after
Max-Age (at least an SRTT, doubled for each earlier try of it, up to 8x), and a round with
a refused share F takes F/2 off the window, down to one block (DCTCP's rule, RFC 8257), after
which the window grows by one block a round.

One token per block, ``salt + block number`` (no table of tokens), kept across re-requests so
a late answer to an earlier try still counts; message ids come from the link. The ETag must be
the same on every block. A 4.01 with an RFC 9175 Echo (the gateway has not seen this address
answer yet) is answered by asking again with the Echo. A CON report can ride along (``ask``): the link drives both, so a
progress report costs no pause in the window.

The link calls ``start(now_ms, rtt, next_mid)`` and then drives the machine (``coap.pump``)
until ``done``: all blocks in, ``verdict`` set (an error), the side exchange over, or
``step`` more bytes complete since this run began (the agent persists the offset then).
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython (MicroPython folds const() as it compiles: never called)
    const = int

from . import coap
from .fetch import CONTENT, CORRUPT, GONE, RESTART

_INCREASE = const(4)  # blocks added to the window per round after slow start
_MIN_WINDOW = const(2)
_INIT_RATE = const(100)  # blocks/s: the first window is what this rate sends in one SRTT,
# half the gateway's default per-host budget (gateway/ratelimit.py DEFAULT_RATE: 200 datagrams/s)
_INIT_MIN = const(16)  # blocks: the first window at least (no SRTT yet: this)
_SPAN = const(4)  # x max_window: how far past a missing block the window may ask (a block lost
# three times in a row costs about 4 RTT, 4 windows; at 2 a whole window stalled behind it)
_MARGIN = const(13)  # /256: a round losing 5 points more than the usual rate is congestion
_LOSS_CAP = const(128)  # /256: no link is taken to lose more than half its blocks as a rule

_FREE = const(0)  # ring slot states
_ASKED = const(1)  # + 2 per copy out (odd: asked)
_HELD = const(2)  # answered 5.03: asked again after the gateway's Max-Age (at least an SRTT)
_GOT = const(4)
_COPY_LOSS = const(64)  # /256: tail copies only below this usual loss per round trip
_UNAVAILABLE = const(0xA3)  # 5.03
_MS_MAX = const(0x3FFFFFFF)  # a ring time at most, ms after the window's first request. A
# window lives for one wake's download; clamped here a slot never overflows its 32 bits and
# reads as a small int (no heap) on a 32-bit port too. Behaviour is the lists' as long as
# times stay below this, 12.4 days after the first request (a 5.03 hold's end included)

# why (burstwhy.WHY): argument errors, then each verdict's
_BAD_ARGS = const(0)
_BAD_OFFSET = const(1)
_IDLE = const(2)
_SILENT = const(3)
_REFUSED = const(4)
_BLOCK2 = const(5)
_ETAG = const(6)
_SIZE2 = const(7)
_LENGTH = const(8)
_UNDECODABLE = const(9)

FAILED = 6  # verdict: no answer for max_tries timeouts in a row (the fetch verdicts otherwise)


class Window:
    def __init__(self, path, size, szx, sink, offset=0, etag=None, max_window=32,
                 init_window=None, max_tries=8, step=16384, salt=0):
        if size <= 0 or not 0 <= szx <= 6 or max_window < 1:
            raise ValueError(_why(_BAD_ARGS))
        bs = 1 << (szx + 4)
        if offset % bs or not 0 <= offset < size:
            raise ValueError(_why(_BAD_OFFSET))
        self.path = path
        self.size = size
        self.szx = szx
        self.sink = sink
        self.etag = etag
        self.echo = None  # RFC 9175 Echo the gateway asked for (our address is not verified)
        self.max_window = max_window
        self.max_tries = max_tries
        self.step = step
        self.salt = salt & 0xFFFFFFFF
        self.base = offset // bs  # first block not received
        self.offset = offset  # bytes complete from the start of the image (what may be persisted)
        self.complete = False  # all blocks in
        self.next = self.base  # first block never asked for
        w = self.span = _SPAN * max_window  # blocks asked may run this far past a missing one
        self.cwnd = min(init_window or 0, max_window)  # 0: from the SRTT at the first start
        self.ssthresh = max_window
        self.silent = 0  # timeouts since the last answer
        self._tail_at = 0  # when the retransmission timer last fired
        self.last_ms = 0  # when the last request went out
        self.first_ms = None  # when the first went out (the rings' time origin)
        self.done_ms = None  # when the last block came
        self.answer_ms = 0  # when the last answer came
        self.loss_avg = 0  # the link's usual loss rate per round, /256
        self._round_end = 0  # send sequence that closes the current round once answered
        self._round_got = 0
        self._round_lost = 0
        self._round_refused = 0
        self.inflight = 0
        self.hi = 0  # highest send sequence answered
        self.probed = False  # a tail loss probe went out since the last answer
        self.reord = 0  # RACK.reo_wnd in SRTT/4: 1 once an answer overtook an earlier
        # one, +1 for each re-ask an earlier try's answer showed needless (up to a whole SRTT)
        self.held = 0  # blocks answered 5.03, waiting
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
        self.requests = 0  # every block request: the send sequence
        self.rerequests = 0
        self.gap_losses = 0  # blocks asked again because later ones were answered
        self.probes = 0
        self.copies = 0  # tail blocks asked twice or three times in idle window slots
        self.timeouts = 0
        self.duplicates = 0
        self.slowed = 0  # 5.03 answers (the gateway's rate limit)
        # The ring, indexed by block % span, made last: the instance dict has grown to its
        # size by now (57 entries in a table of 59 on MicroPython 1.29: a 60th attribute takes
        # a table of 73, +224 B), and the rings fill the holes its growth left (made first,
        # they took 0.5-1 KiB more of the smallest heap for a full update: the download's
        # datagram found no hole). The send sequence number of the block's latest request and
        # when it was sent (ms after first_ms, _MS_MAX) in 32 bits: a list slot is 8 bytes on
        # a 64-bit port. An array from a range is allocated once (from a bytearray: a freed
        # temporary of the same size, 0.5 KiB more); a slot is written before it is read
        self._state = bytearray(w)
        self._tries = bytearray(w)
        self._seq = array("i", range(w))
        self._ms = array("i", range(w))

    def ask(self, req):
        """Send CON request ``req`` (a report) along with the blocks in the next run; its answer
        (None: it failed) is ``side_response`` when the run ends."""
        self._ask = req

    # -- the machine -------------------------------------------------------------------------
    def start(self, now_ms, rtt, next_mid, rand=lambda: 0.5):
        self.rtt = rtt
        if not self.cwnd:
            # what the gateway passes one device in a round trip: 32 blocks at 1.5 s RTT
            # (NB-IoT), 16 at 100 ms, where 32 would be 320 requests/s against its 200
            self.cwnd = min(self.max_window, max(_INIT_MIN, _INIT_RATE * (rtt.srtt or 0) // 1000))
        self.next_mid = next_mid
        if not self.answer_ms:
            self.answer_ms = now_ms
        self.done = False
        self.mark = self.base
        self.side_response = None
        if self._ask is not None:
            req, self._ask = self._ask, None
            self._asked += 1  # a block's token is salt + num < salt + 2**31: never this one
            token = ((self.salt + 0x80000000 + self._asked) & 0xFFFFFFFF).to_bytes(4, "big")
            self.side = coap.Exchange(req, next_mid(), token, now_ms, rand, rtt=rtt)
            self.outgoing.extend(self.side.outgoing)
            self.side.outgoing = []
        self._fill(now_ms)
        self._settle()

    def _send(self, num, now_ms):
        """Ask for block ``num`` (again, if it was asked before: a re-request)."""
        i = num % self.span
        self.last_ms = now_ms
        if self.first_ms is None:
            self.first_ms = now_ms
        self._seq[i] = self.requests = self.requests + 1
        self._ms[i] = min(now_ms - self.first_ms, _MS_MAX)
        t = self._tries[i]
        if t:
            self.rerequests += 1
        if t < 255:
            self._tries[i] = t + 1
        echo = self.echo
        req = coap.Request(coap.GET, self.path, block2=(num, self.szx), con=False,
                           options=[(coap.ECHO, echo)] if echo else None)
        token = ((self.salt + num) & 0xFFFFFFFF).to_bytes(4, "big")
        self.outgoing.append(req.encode(self.next_mid(), token))

    def _fill(self, now_ms):
        """Ask for blocks while the window has room: refused (held) ones first once their
        Max-Age is over (they keep their slot meanwhile), then new ones."""
        span = self.span
        state = self._state
        ms = self._ms
        if self.held:
            now = now_ms - self.first_ms
            for num in range(self.base, self.next):
                if self.inflight - self.held >= self.cwnd:
                    return
                i = num % span
                if state[i] == _HELD and now >= ms[i]:
                    self.held -= 1
                    state[i] = _ASKED
                    self._send(num, now_ms)
        while (self.inflight < self.cwnd and self.next << self.szx + 4 < self.size
               and self.next < self.base + span):
            i = self.next % span
            state[i] = _ASKED
            self._tries[i] = 0
            self.inflight += 1
            self._send(self.next, now_ms)
            self.next += 1
        if self.inflight < self.cwnd and 0 < self.loss_avg < _COPY_LOSS:
            # Nothing new to ask and the window has room (the last round): ask the blocks
            # asked in the last SRTT/4 again, each to three requests at most (RFC 8985's
            # probe, without its wait). A loss among them otherwise costs a round trip
            # more; copies spend idle slots, and only where loss is usual but below a quarter
            out = self.inflight
            for num in range(self.base, self.next):
                st = state[num % span]
                if st & 1:
                    out += st >> 1
            young = now_ms - self.first_ms - (self.rtt.srtt or 0) // 4
            for st in (_ASKED, _ASKED + 2):
                for num in range(self.next - 1, self.base - 1, -1):
                    i = num % span
                    if out < self.cwnd and state[i] == st and ms[i] >= young:
                        state[i] = st + 2
                        out += 1
                        self.copies += 1
                        seq = self._seq[i]
                        self._send(num, now_ms)
                        # the copied try's sequence stays: any answer vouches for it (RACK)
                        self._seq[i] = seq

    def _count(self, seq, lost):
        """One block's fate (answered, lost, or refused: 2), for the round it was asked in;
        once the round is over (its last request was answered or lost): grow, or shrink."""
        if lost == 2:
            self._round_refused += 1
        elif lost:
            self._round_lost += 1
        else:
            self._round_got += 1
        if seq <= self._round_end:
            return
        lost = self._round_lost
        n = self._round_got + lost
        refused = self._round_refused
        c = self.cwnd
        if refused:
            # the gateway refused F = refused / asked of this round (5.03): it passes what was
            # answered; take F/2 off the window (DCTCP's rule for marks, RFC 8257), down to 1
            self.cwnd = self.ssthresh = max(1, c - max(1, c * refused // (2 * (n + refused))))
        elif n:
            frac = (lost << 8) // n
            p = self.loss_avg
            d = frac - p
            if lost and c < self.ssthresh:
                # the first loss ends slow start. Congestion would take about what the last
                # doubling added, random loss its own share of every round: take off this
                # round's loss fraction (at most half), the first guess of the usual rate
                self.cwnd = self.ssthresh = max(_MIN_WINDOW,
                                                c - max(1, (c * min(_LOSS_CAP, frac)) >> 8))
                self.loss_avg = min(_LOSS_CAP, frac)
            elif lost and not p:
                self.loss_avg = min(_LOSS_CAP, frac)  # the first lossy round: the usual
            elif lost and d > _MARGIN and (p >= 64 or d * d * n > 4 * frac * (256 - frac)):
                # above the usual rate by the margin and, while that rate is below a quarter,
                # by two standard deviations of a round of n at its own rate (the usual rate
                # is a guess from a round or two: at 5 % loss each way 1 then 3 lost of 32
                # took a quarter off); above a quarter the margin alone (a silent rate
                # limit's drops, learnt as the usual rate)
                self.cwnd = self.ssthresh = max(_MIN_WINDOW, c - max(1, c // 4))
            elif c >= self.ssthresh and frac <= self.loss_avg:
                # _INCREASE; once the gateway has refused a block, one (its limit is near:
                # Reno). The round a refusal is counted in closes in the branch above, so no
                # round grows between the first refusal and this rule taking hold
                self.cwnd = min(c + (1 if self.slowed else _INCREASE), self.max_window)
            self.loss_avg = min(_LOSS_CAP, (3 * self.loss_avg + frac) >> 2)
        self._round_got = self._round_lost = self._round_refused = 0
        self._round_end = self.requests

    def _settle(self):
        """Set ``deadline`` and ``done`` after an event."""
        side = self.side
        if side is not None:
            self.outgoing.extend(side.outgoing)
            side.outgoing = []
            if side.done:
                self.side_response = None if side.failed else side.response
                self.side = side = None
                self.done = True
        if self.verdict is not None or self.complete:
            self.done = True
        if (self.base - self.mark) << self.szx + 4 >= self.step:
            self.done = True
        d = None
        if not self.complete:
            # when each block counts as lost: a block asked later was answered: RACK; the
            # tail: the retransmission timer, restarted by each expiry; a held one: its hold
            late = self._overdue_ms()
            rto = self._overdue_ms(True)
            t0 = self.first_ms
            tail = self._tail_at - t0
            span = self.span
            state = self._state
            ms = self._ms
            seq = self._seq
            hi = self.hi
            out = self.inflight - self.held
            room = out < self.cwnd
            for num in range(self.base, self.next):
                i = num % span
                st = state[i]
                if st & 1 or (st == _HELD and room):
                    t = ms[i]
                    if st & 1:
                        t = t + late if seq[i] < hi else (t if t > tail else tail) + rto
                    t += t0
                    if d is None or t < d:
                        d = t
            # the tail loss probe (RFC 8985 7): on_timeout
            srtt = self.rtt.srtt
            if not (self.probed or not out or srtt is None):
                t = self.last_ms + 2 * srtt + 2
                if d is None or t < d:
                    d = t
        if side is not None and (d is None or side.deadline < d):
            d = side.deadline
        self.deadline = d
        if d is None and not self.done:
            # cannot happen: the window always asks
            self.verdict, self.why, self.done = FAILED, _why(_IDLE), True

    def _overdue_ms(self, tail=False):
        """How long a block may be out once a later-sent one was answered (RACK). On a link
        that keeps order (none seen yet: RFC 8985's RACK.reord) an answer to a later request
        already means this one was lost: one SRTT; after reordering, a quarter more.

        ``tail``: the retransmission timer, for a block no later answer vouches for; never
        sooner than SRTT + SRTT/4: on a steady link RTTVAR decays to nothing and SRTT +
        4 RTTVAR fired while the answers to a whole burst were a few ms away (measured: 20
        blocks asked twice at 1.5 s RTT)."""
        rto = self.rtt.rto
        srtt = self.rtt.srtt or rto
        late = srtt + srtt * (1 if tail else self.reord) // 4 + 2
        return rto if tail and rto > late else late

    def _recover(self, now_ms):
        """Ask again, now, for every block a later answer shows lost (RACK)."""
        now = now_ms - self.first_ms - self._overdue_ms()
        span = self.span
        state = self._state
        seq = self._seq
        for num in range(self.base, self.next):
            i = num % span
            if state[i] & 1 and seq[i] < self.hi and now >= self._ms[i]:
                state[i] = _ASKED  # its copies count as lost too
                self._count(seq[i], True)
                self.gap_losses += 1
                self._send(num, now_ms)

    def on_timeout(self, now_ms):
        if self.side is not None:
            # the report keeps its own doubling timer, but only the window's timer backs off
            # the shared timeout: both doubling it made a 1.5 s outage a 32 s wait
            r = self.rtt.rto
            self.side.on_timeout(now_ms)
            self.rtt.rto = r
        if not self.done:
            self._recover(now_ms)
            span = self.span
            state = self._state
            srtt = self.rtt.srtt
            # Tail loss probe (RFC 8985 7): two SRTT after the last request with no answer
            # since, ask again for the newest block still out (its answer lets RACK find the
            # rest)
            if (not (self.probed or self.inflight == self.held or srtt is None)
                    and now_ms >= self.last_ms + 2 * srtt + 2):
                for num in range(self.next - 1, self.base - 1, -1):
                    if state[num % span] & 1:
                        self.probed = True
                        self.probes += 1
                        self._send(num, now_ms)
                        break
            # The retransmission timer: of the blocks no later answer vouches for, ask the
            # newest expired one again, one per expiry as TCP's RTO does; the others' timers
            # restart. After a stall its answer lets RACK find the lost ones; asking all again
            # cost up to a window of duplicates whenever the host or the link paused.
            rto = self._overdue_ms(True)
            now = now_ms - self.first_ms
            tail = self._tail_at - self.first_ms
            seq = self._seq
            ms = self._ms
            pick = None
            for num in range(self.base, self.next):
                i = num % span
                if (state[i] & 1 and seq[i] >= self.hi
                        and now >= max(ms[i], tail) + rto
                        and (pick is None or seq[i] > seq[pick % span])):
                    pick = num
            if pick is not None:
                i = pick % span
                self.timeouts += 1
                self._tail_at = now_ms
                if self.answer_ms <= ms[i] + self.first_ms:
                    # no answer at all since this request: silence, not one lost block
                    self.silent += 1
                    if self.silent >= self.max_tries:
                        self.verdict, self.why, self.done = (
                            FAILED, _why(_SILENT, self.silent), True)
                    elif self.silent >= 2 and now_ms - self.answer_ms >= 4 * (srtt or rto):
                        # silence: whole rounds dropped
                        self.cwnd = self.ssthresh = max(_MIN_WINDOW, self.cwnd // 2)
                    self.rtt.backoff()
                if not self.done:
                    state[i] = _ASKED
                    self._count(seq[i], True)
                    self._send(pick, now_ms)
            if not self.done:
                self._fill(now_ms)
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
        """One answer to a block request (an error sets ``verdict``; ``_settle`` ends the run)."""
        num = (int.from_bytes(msg.token, "big") - self.salt) & 0xFFFFFFFF
        if not self.base <= num < self.next:
            if num < self.base:
                self.duplicates += 1
            return
        span = self.span
        state = self._state
        i = num % span
        st = state[i]
        if not st & 3:  # free or got
            self.duplicates += 1
            return
        resp = msg
        code = resp.code
        if code == coap.UNAUTHORIZED and msg.opt(coap.ECHO):
            self.echo = bytes(msg.opt(coap.ECHO))  # prove we receive at this address
            self._send(num, now_ms)  # bounded by max_tries like any other try
            return
        rtt = self.rtt
        now = now_ms - self.first_ms
        if code == _UNAVAILABLE:
            # 5.03 + Max-Age: the gateway's budget for our address is spent (ratelimit.py).
            # Not a loss on the link: the block keeps its slot and is asked again after
            # Max-Age (at least an SRTT; doubled for each earlier try, up to 8x); the round's
            # refused share shrinks the window (_count)
            if st & 1:
                self.slowed += 1
                self.silent = 0
                self.answer_ms = now_ms
                rtt.answered()
                state[i] = _HELD
                self.held += 1
                srtt = rtt.srtt or rtt.rto
                wait = 1000 * (resp.max_age or 0)
                t = self._tries[i]
                self._ms[i] = min(now + ((wait if wait > srtt else srtt) << (t - 1 if t < 4 else 3)),
                                  _MS_MAX)
                self._count(self._seq[i], 2)
            return
        if code != CONTENT:
            if 0x80 <= code < 0xA0 and code not in (0x88, 0x8D):
                self.verdict, self.why = GONE, _why(_REFUSED, num, coap.code_str(code))
            return  # 5.xx: the timer asks again
        b2 = resp.block2
        szx = self.szx
        if b2 is None or b2[0] != num or b2[2] != szx:
            self.verdict, self.why = CORRUPT, _why(_BLOCK2, num, b2)
            return
        if resp.etag is not None:
            etag = bytes(resp.etag)
            if self.etag is None:
                self.etag = etag
            elif etag != self.etag:
                self.verdict, self.why = RESTART, _why(_ETAG, num)
                return
        size = self.size
        if resp.size2 is not None and resp.size2 != size:
            self.verdict, self.why = CORRUPT, _why(_SIZE2, resp.size2, size)
            return
        off = num << szx + 4
        n = len(resp.payload)
        if n != min(1 << szx + 4, size - off):
            self.verdict, self.why = CORRUPT, _why(_LENGTH, num, n)
            return
        seq = self._seq[i]
        ago = now - self._ms[i]
        m = rtt.min_rtt or 0
        once = self._tries[i] == 1 and st & 1  # (a held block's _ms is its hold time)
        if once and seq < self.hi and not self.reord:
            self.reord = 1  # a later request was answered first: the link reorders
        # sooner than a round trip after a re-ask: an earlier try's answer (RFC 8985 6.2),
        # which vouches for nothing sent after it; within half of one, the try was not lost
        # at all (RFC 8985's DSACK rule, by time as Eifel does): widen the reorder window
        early = st == _ASKED and not once and ago < m
        if early and ago < m // 2:
            self.reord = min(4, self.reord + 1)
        self.silent = 0
        self.answer_ms = now_ms
        self.probed = False
        if once:
            rtt.sample(ago)  # Karn: asked once
        else:
            rtt.answered()
        if st == _HELD:  # an earlier try's answer came after all
            self.held -= 1
        state[i] = _GOT
        self.inflight -= 1
        bad = self.sink.put(off, resp.payload)  # True: a decoder behind it found it bad
        # congestion window: slow start, then _INCREASE per round trip
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + 1, self.max_window)
        self._count(seq, False)
        # the contiguous prefix
        b = self.base
        if state[b % span] == _GOT:
            while b < self.next and state[b % span] == _GOT:
                state[b % span] = _FREE
                b += 1
            self.base = b
            off = self.offset = min(b << szx + 4, size)
            self.complete = off == size
            bad = self.sink.advance(off) or bad
            if self.complete:
                self.done_ms = now_ms
        if bad:
            self.verdict, self.why = CORRUPT, _why(_UNDECODABLE)
            return
        if seq > self.hi and not early:
            self.hi = seq
        self._recover(now_ms)
        self._fill(now_ms)


def _why(n, *args):
    """Text ``n`` of ``why`` with ``args``: burstwhy.py is loaded at the first error only."""
    from .burstwhy import WHY

    return WHY[n] % args

