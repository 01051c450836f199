"""The sans-IO download core with a fake clock: RTT estimator (RFC 6298), the CoAP exchange
feeding it, and ``burst.Window`` (first window from the SRTT, slow start, gap recovery without
timers and with reordering, tail timer with bounded back-off only on silence, AIMD, the
gateway's 5.03 + Max-Age, duplicates, refusals, a report riding along, resume). Datagrams are
real CoAP bytes; the "server" below answers them as the gateway's fast path does."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from device import burst, coap, rtt
from device.fetch import CORRUPT, GONE, RESTART, Fetch
from device.slots import FileSlots
from sim.windowclock import next_event

PATH = "f/abcd1234"
ETAG = b"E" * 8


# -- RTT estimator ----------------------------------------------------------------------------

def test_rtt_first_guess_then_rfc6298() -> None:
    r = rtt.Rtt(initial_ms=2000, min_ms=100, max_ms=8000)
    assert r.rto == 2000 and r.srtt is None
    r.sample(100)  # first: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR
    assert (r.srtt, r.rttvar, r.rto) == (100, 50, 300)
    r.sample(100)  # RTTVAR = 3/4 50 + 1/4 0; SRTT = 100
    assert (r.srtt, r.rttvar, r.rto) == (100, 37, 248)
    for _ in range(50):
        r.sample(100)
    assert r.rto == 110 and r.min_rtt == 100  # steady link: SRTT + max(G, 4 RTTVAR)
    r.sample(1)
    assert r.min_rtt == 1


def test_rtt_bounded_backoff_until_an_answer() -> None:
    r = rtt.Rtt(initial_ms=2000, min_ms=100, max_ms=8000)
    seen = []
    for _ in range(6):
        r.backoff()
        seen.append(r.rto)
    assert seen == [4000, 8000, 8000, 8000, 8000, 8000]
    r.sample(20)
    assert r.rto == 100  # 20 + 40 is below the floor
    r.backoff()
    r.backoff()
    assert r.rto == 400
    r.answered()  # an answer to a retransmitted request: no sample, but the peer is there
    assert r.rto == 100 and r.samples == 1


def test_exchange_feeds_the_estimator_karn() -> None:
    r = rtt.Rtt(initial_ms=1000)
    req = coap.Request(coap.POST, "r", payload=b"x")
    ex = coap.Exchange(req, 7, b"tok1", 0, lambda: 0.0, rtt=r)
    assert ex.timeout == 1000  # the estimator's timeout, not a fixed 2 s
    ack = coap.encode(coap.ACK, 0x44, 7, b"tok1", [], b"")
    ex.on_datagram(ack, 180)
    assert ex.response is not None and r.srtt == 180
    # a retransmitted request gives no sample (the answer may be to either copy); its timer
    # backs the shared timeout off
    rto = r.rto
    ex = coap.Exchange(req, 8, b"tok2", 1000, lambda: 0.0, rtt=r)
    assert ex.timeout == rto
    ex.on_timeout(1000 + rto)
    assert ex.retransmits == 1 and r.rto == 2 * rto
    ex.on_datagram(coap.encode(coap.ACK, 0x44, 8, b"tok2", [], b""), 1000 + rto + 5)
    assert ex.response is not None and r.samples == 1  # no sample: Karn
    assert r.rto == rto  # but the peer answered: the back-off is over


# -- the window, against a scripted server ------------------------------------------------------

class Sink:
    def __init__(self) -> None:
        self.puts: list[int] = []
        self.advanced: list[int] = []

    def put(self, off: int, data: bytes) -> None:
        self.puts.append(off)

    def advance(self, off: int) -> None:
        self.advanced.append(off)


def block_of(datagram: bytes) -> tuple[int, coap.Message]:
    m = coap.decode(datagram)
    return coap.parse_block(coap.to_uint(m.opt(coap.BLOCK2)))[0], m


def answer(datagram: bytes, size: int, szx: int, etag: bytes = ETAG, code: int = 0x45,
           payload: bytes | None = None, size2: int | None = None) -> bytes:
    """What the gateway sends for a NON block GET (or a wrong variant of it)."""
    num, m = block_of(datagram)
    bs = 1 << (szx + 4)
    body = image(size)[num * bs:(num + 1) * bs] if payload is None else payload
    opts = [(coap.ETAG, etag), (coap.BLOCK2, coap.uint(coap.block_value(num, (num + 1) * bs < size, szx))),
            (coap.SIZE2, coap.uint(size if size2 is None else size2))]
    return coap.encode(coap.NON, code, m.mid, m.token, opts, body if code == 0x45 else b"no")


def image(size: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(size))


class Mids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def started(size: int = 64 * 16, szx: int = 0, initial_ms: int = 100, **kw) -> tuple[burst.Window, Sink, rtt.Rtt]:  # type: ignore[no-untyped-def]
    sink = Sink()
    r = rtt.Rtt(initial_ms=initial_ms, min_ms=10)
    w = burst.Window(PATH, size, szx, sink, salt=0x1234, **kw)
    w.start(0, r, Mids())
    return w, sink, r


def take(w: burst.Window) -> list[bytes]:
    out, w.outgoing = w.outgoing, []
    return out


def nums(datagrams: list[bytes]) -> list[int]:
    return [block_of(d)[0] for d in datagrams]


def test_slow_start_doubles_per_round_to_the_cap() -> None:
    w, sink, r = started(size=64 * 16, max_window=16, init_window=4, step=1 << 20)
    rounds = []
    now = 0
    while not w.complete and len(rounds) < 10:
        sent = take(w)
        assert all(coap.decode(d).mtype == coap.NON for d in sent)
        rounds.append(len(sent))
        now += 20
        for d in sent:  # every answer comes back, in order, one round trip later
            w.on_datagram(answer(d, 64 * 16, 0), now)
    assert rounds == [4, 8, 16, 16, 16, 4]  # 4, +1 per answer (doubling), capped at 16
    assert sink.puts == [16 * i for i in range(64)] and w.done
    assert r.samples == 64 and r.srtt == 20  # every block sent once is a sample


@pytest.mark.parametrize("srtt, first", [(None, 16), (100, 16), (240, 24), (1500, 32)])
def test_first_window_is_what_the_gateway_passes_in_one_round_trip(srtt, first) -> None:
    r = rtt.Rtt(initial_ms=2000)
    if srtt:
        r.sample(srtt)  # the reports before the download measured the link
    w = burst.Window(PATH, 64 * 16, 0, Sink(), salt=1)
    w.start(0, r, Mids())
    assert len(take(w)) == w.cwnd == first  # INIT_RATE x SRTT, from 16 to the window's 32


def test_gap_is_asked_again_at_once_without_a_timer() -> None:
    w, sink, r = started(size=16 * 16, init_window=8, step=1 << 20)
    sent = take(w)
    assert nums(sent) == list(range(8))
    # block 1's answer is lost; 0, 2, 3, 4 come at 20 ms (the first samples: SRTT 20)
    for d in [sent[0], sent[2], sent[3], sent[4]]:
        w.on_datagram(answer(d, 256, 0), 20)
    assert 1 not in nums(take(w))  # out for 20 ms only: not overdue yet
    # no reordering seen: a later request's answer means 1 is lost once it is out one SRTT
    assert w.deadline == 0 + 20 + 2 < 0 + r.rto  # RACK, not the RTO
    w.on_datagram(answer(sent[5], 256, 0), 22)  # a later answer once 1 is overdue: at once
    again = take(w)
    assert 1 in nums(again) and w.gap_losses == 1 and w.timeouts == 0
    w.on_datagram(answer(sent[1], 256, 0), 30)  # the first try's late answer still counts
    assert w.base == 6 and sink.advanced[-1] == 6 * 16
    w.on_datagram(answer(sent[1], 256, 0), 31)  # and the re-request's answer is a duplicate
    assert w.duplicates == 1 and sink.puts.count(16) == 1


def test_reordering_seen_widens_the_gap_allowance() -> None:
    w, sink, r = started(size=16 * 16, init_window=8, step=1 << 20)
    sent = take(w)
    w.on_datagram(answer(sent[2], 256, 0), 20)
    assert not w.reord
    w.on_datagram(answer(sent[0], 256, 0), 20)  # 0 overtaken by 2: the link reorders
    assert w.reord == 1
    w.on_datagram(answer(sent[3], 256, 0), 20)  # 1 is missing: RFC 8985's reo_wnd now
    assert w.deadline == 0 + 20 + 20 // 4 + 2  # SRTT + SRTT/4
    w.on_datagram(answer(sent[4], 256, 0), 24)
    assert 1 not in nums(take(w))
    w.on_timeout(w.deadline)
    assert nums(take(w)) == [1] and w.gap_losses == 1


def test_tail_timer_waits_like_rack_and_backs_off_only_on_silence() -> None:
    w, sink, r = started(size=8 * 16, init_window=8, step=1 << 20)
    sent = take(w)
    for _ in range(40):  # a steady link: RTTVAR decays, the RTO nears SRTT
        r.sample(100)
    for d in sent[:7]:
        w.on_datagram(answer(d, 128, 0), 100)
    assert r.rto == 110 and r.srtt == 100
    # block 7, the newest, is out: not before SRTT + SRTT/4 (its answer may be a few ms off)
    assert w.deadline == 0 + 100 + 25 + 2
    rto = r.rto
    w.on_timeout(w.deadline)
    assert nums(take(w)) == [7] and w.timeouts == 1
    assert r.rto == rto and w.silent == 0  # answers came after it was asked: a loss, no back-off
    w.on_timeout(w.deadline)  # but now nothing answered since the re-request: silence
    assert nums(take(w)) == [7] and r.rto == 2 * rto and w.silent == 1


def test_503_holds_the_block_for_max_age_and_shrinks_by_the_refused_share() -> None:
    w, sink, r = started(size=64 * 16, max_window=16, step=1 << 20)
    sent = take(w)
    assert len(sent) == 16 and w.cwnd == 16  # the full window at once
    for d in sent[:4]:
        w.on_datagram(answer(d, 1024, 0), 20)
    more = take(w)
    assert nums(more) == [16, 17, 18, 19]  # each answer frees a slot at once
    for d in sent[4:12]:  # the gateway's budget for our address is spent: 5.03, Max-Age 1
        _, m = block_of(d)
        w.on_datagram(coap.encode(coap.NON, 0xA3, m.mid, m.token,
                                  [(coap.MAX_AGE, b"\x01")], b""), 21)
    assert w.slowed == 8 and w.held == 8
    assert take(w) == []  # a refused block keeps its slot: nothing new
    for d in sent[12:] + more:  # the round ends (block 16's answer): 8 of 16 refused
        w.on_datagram(answer(d, 1024, 0), 22)
    assert w.cwnd == 16 - 16 * 8 // (2 * 16) == 12  # F/2 off (DCTCP)
    assert w.timeouts == 0 and w.gap_losses == 0  # held, not lost
    out = take(w)
    assert nums(out) == [20, 21, 22, 23]  # room: 12 - 8 held
    resent: dict[int, int] = {}
    now = 22
    for _ in range(200):  # everything else is answered 20 ms later
        if len(resent) == 8:
            break
        now = min(now + 20, w.deadline)
        for d in out:
            n = nums([d])[0]
            if 4 <= n < 12:
                resent.setdefault(n, now - 20)
            w.on_datagram(answer(d, 1024, 0), now)
        out = take(w)
        if not out:
            w.on_timeout(now)
            out = take(w)
    assert resent == {n: 21 + 1000 for n in range(4, 12)} and w.held == 0
    assert w.timeouts == 0 and w.gap_losses == 0  # held, not lost


def simulate(w: burst.Window, r: rtt.Rtt, size: int, drop: Callable[[int], bool],
             rtt_ms: int = 20, limit_ms: int = 600_000) -> list[int]:
    """Run ``w`` against a server one ``rtt_ms`` away on a fake clock; ``drop(now)`` decides
    each request's fate. Returns the window after every answer."""
    import heapq

    q: list[tuple[int, int, bytes]] = []
    now = n = 0
    cwnds = []
    w.start(0, r, Mids())
    while not w.complete and now < limit_ms:
        assert w.verdict is None, w.why
        for d in take(w):
            n += 1
            if not drop(now):
                heapq.heappush(q, (now + rtt_ms, n, answer(d, size, 0)))
        now, answered = next_event(w, q)
        if answered:
            cwnds.append(w.cwnd)
    assert w.complete
    return cwnds


def test_aimd_takes_random_loss_as_the_link_and_a_rate_limit_as_congestion() -> None:
    import random

    size = 300 * 16
    rng = random.Random(4)
    w, _, r = started(size=size, step=1 << 30)
    steady = simulate(w, r, size, lambda now: rng.random() < 0.36)  # 20 % each way
    tail = steady[len(steady) // 2:]
    assert sum(tail) / len(tail) > 8  # random loss: the window stays open (TCP's: about 2)

    class Bucket:  # a rate limit: 8 requests per 20 ms round trip, a burst of 8
        tokens, t = 8.0, 0

        def __call__(self, now: int) -> bool:
            self.tokens = min(8.0, self.tokens + (now - self.t) * 8 / 20)
            self.t = now
            if self.tokens >= 1:
                self.tokens -= 1
                return False
            return True

    w, _, r = started(size=size, step=1 << 30)
    limited = simulate(w, r, size, Bucket())
    tail = limited[len(limited) // 2:]
    assert sum(tail) / len(tail) < 24  # drops that grow with the rate shrink it (max 32)
    assert w.rerequests < size // 16  # no storm: less than one re-request per block


def scripted(blocks: int, drop: Callable[[int, int], bool], rtt_ms: int = 100,
             **kw) -> tuple[burst.Window, list[tuple[int, int, int]]]:
    """Fetch ``blocks`` blocks through a window of 32 from a server ``rtt_ms`` away on a fake
    clock; ``drop(block, try)`` loses that request or its answer. Returns the window and every
    request as (time, block, cwnd)."""
    import heapq

    size = blocks * 16
    r = rtt.Rtt(initial_ms=rtt_ms, min_ms=10)
    w = burst.Window(PATH, size, 0, Sink(), salt=0x1234, init_window=32, step=1 << 30, **kw)
    q: list[tuple[int, int, bytes]] = []
    log: list[tuple[int, int, int]] = []
    now = 0
    w.start(0, r, Mids())
    while not w.complete and now < 100 * rtt_ms:
        for d in take(w):
            num = nums([d])[0]
            log.append((now, num, w.cwnd))
            if not drop(num, sum(1 for _, b, _ in log if b == num)):
                heapq.heappush(q, (now + rtt_ms, len(log), answer(d, size, 0)))
        now, _ = next_event(w, q)
    assert w.complete and w.verdict is None
    return w, log


def test_the_last_round_asks_its_blocks_again_in_idle_slots() -> None:
    # 64 blocks, window 32: the last round (t = 200) asks for block 63 alone; its first try
    # is lost. The link lost blocks before (3, 40), so it asks 63 three times at once, in
    # slots nothing else can use, and the download ends one round trip after
    w, log = scripted(64, lambda num, t: num in (3, 40, 63) and t == 1)
    assert [n for t, n, _ in log if t == 200] == [63, 63, 63] and w.copies >= 2
    assert w.done_ms == 300 + 2 and w.timeouts == 0
    # 3 was asked again in the second round (no copies: the window was full), 40 in the last
    # (with two copies)
    assert sum(1 for _, n, _ in log if n < 63) == 63 + 1 + 3
    # a link that lost nothing before (63 is asked at t = 100 now): no copies; 63 waits for
    # the tail timer, SRTT + SRTT/4
    w, log = scripted(64, lambda num, t: num == 63 and t == 1)
    assert w.copies == 0 and w.timeouts == 1 and w.done_ms == 100 + 127 + 100
    # a link that loses a third (more than a quarter): copies would not pay, none
    w, log = scripted(64, lambda num, t: num % 3 == 0 and t == 1)
    assert w.copies == 0 and w.loss_avg >= 64


def test_a_copy_keeps_its_tries_place_so_rack_still_finds_a_loss() -> None:
    # 62 and 63 in the last round, each asked three times; every try of 62 is lost. The
    # answer to 63 vouches for 62's first try (sent before it), not for 63's copies (sent
    # after 62's), so RACK asks 62 again at once instead of waiting for the tail timer
    w, log = scripted(64, lambda num, t: (num in (3, 9) and t == 1) or (num == 62 and t <= 3))
    assert [n for t, n, _ in log if t == 200] == [62, 63, 63, 62, 63, 62]
    assert [n for t, n, _ in log if t == 302] == [62, 62, 62]  # when 63's answer came
    assert w.timeouts == 0 and w.gap_losses == 3 and w.done_ms == 402


def test_an_early_answer_to_a_reask_widens_the_reorder_window() -> None:
    # RFC 8985's DSACK rule by time: block 1's answer comes 8 ms after RACK asked it again,
    # too soon to answer the re-ask (the link's round trip is 100 ms): the first try was late,
    # not lost. The reorder window grows by SRTT/4 each time, and the early answer vouches for
    # nothing sent after the first try
    w, sink, r = started(size=16 * 16, init_window=8, step=1 << 20, initial_ms=200)
    sent = take(w)
    for d in [sent[0], sent[2], sent[3]]:
        w.on_datagram(answer(d, 256, 0), 100)
    w.on_datagram(answer(sent[4], 256, 0), 102)
    assert 1 in nums(take(w)) and w.gap_losses == 1 and w.reord == 0
    hi = w.hi
    w.on_datagram(answer(sent[1], 256, 0), 110)  # the first try's answer, late
    assert w.reord == 1 and w.hi == hi
    w.on_datagram(answer(sent[6], 256, 0), 112)  # 5 is missing: now SRTT + SRTT/4
    srtt = r.srtt
    assert w.deadline == 0 + srtt + srtt // 4 + 2
    w.on_timeout(w.deadline)
    assert 5 in nums(take(w))
    w.on_datagram(answer(sent[5], 256, 0), w.deadline + 3)  # late again: a quarter more
    assert w.reord == 2 and w._overdue_ms() == srtt + srtt * 2 // 4 + 2


def test_a_round_is_congested_only_beyond_two_deviations_at_its_own_rate() -> None:
    # 5 % loss each way, as the NB-IoT profile: one block lost of 32, then three. Against a
    # usual rate guessed from one round (3 %), three of 32 looked congested and took a quarter
    # off; at the round's own rate (9 %) they are within two deviations: the window stays 32
    lost = {5, 40, 45, 50}
    w, log = scripted(128, lambda num, t: num in lost and t == 1)
    assert {c for _, _, c in log} == {32} and w.gap_losses == 4
    # a round losing half its blocks is congestion all the same: a quarter off
    w, log = scripted(128, lambda num, t: t == 1 and (num == 5 or 40 <= num < 72 and num % 2))
    assert min(c for _, _, c in log) == 24


def test_tail_probe_then_timer_with_bounded_backoff() -> None:
    w, sink, r = started(size=4 * 16, init_window=4, step=1 << 20)
    sent = take(w)
    for d, t in zip(sent[:3], (10, 20, 12)):  # block 3, the last, never answers
        w.on_datagram(answer(d, 64, 0), t)
    assert (r.srtt, r.rto) == (11, 27)
    assert w.deadline == 0 + 2 * 11 + 2  # the tail: a probe at 2 SRTT, before the RTO
    w.on_timeout(w.deadline)
    assert nums(take(w)) == [3] and w.probes == 1 and w.timeouts == 0
    times = []
    now = w.deadline
    rto = r.rto
    assert now == 24 + rto  # then the retransmission timer
    for _ in range(4):
        w.on_timeout(now)
        times.append(now)
        assert nums(take(w)) == [3]
        now = w.deadline
    assert [t - s for s, t in zip(times, times[1:])] == [2 * rto, 4 * rto, 8 * rto]  # doubling
    assert w.timeouts == 4 and w.cwnd == 2  # silence halved it, down to the floor (_MIN_WINDOW)
    w.on_datagram(answer(sent[3], 64, 0), now)
    assert w.complete and r.rto == rto  # an answer ends the back-off


def test_dead_link_ends_with_failed() -> None:
    w, sink, r = started(size=64, max_tries=5, initial_ms=100)
    now = 0
    while not w.done and now < 10**6:
        take(w)
        now = w.deadline
        w.on_timeout(now)
    assert w.verdict == burst.FAILED and "no answer after 5 timeouts" in w.why
    assert r.rto <= r.max_ms


@pytest.mark.parametrize("bad, verdict, why", [
    (dict(etag=b"F" * 8), RESTART, "ETag changed at block 1: the image changed"),
    (dict(code=0x84), GONE, "block 1 answered 4.04"),
    (dict(payload=b"short"), CORRUPT, "block 1 has 5 bytes"),
    (dict(size2=99), CORRUPT, "Size2 99, expected 64"),
])
def test_refusals(bad: dict, verdict: int, why: str) -> None:
    w, sink, r = started(size=64, init_window=4)
    sent = take(w)
    w.on_datagram(answer(sent[0], 64, 0), 1)
    w.on_datagram(answer(sent[1], 64, 0, **bad), 2)
    assert w.done and w.verdict == verdict and sink.puts == [0]
    assert w.why == why  # the text from burstwhy.py, loaded at the first error


def test_server_errors_strays_and_garbage_are_ignored() -> None:
    w, sink, r = started(size=64, init_window=4)
    sent = take(w)
    w.on_datagram(answer(sent[0], 64, 0, code=0xA3), 1)  # 5.03: the timer asks again
    w.on_datagram(b"\x40", 1)
    w.on_datagram(coap.encode(coap.NON, 0x45, 9, b"zzzz", [], b"x"), 1)  # not our token
    assert not w.done and sink.puts == [] and w.verdict is None
    ack_for_con = coap.encode(coap.CON, 0x45, 77, b"q", [], b"")
    w.on_datagram(ack_for_con, 1)
    assert take(w) == [coap.encode(coap.ACK, 0, 77, b"", [], b"")]


def test_echo_challenge_is_answered_with_the_echo() -> None:
    w, sink, r = started(size=64, init_window=2)
    sent = take(w)
    for d in sent:  # an unverified source: 4.01 + Echo for every block (RFC 9175)
        _, m = block_of(d)
        w.on_datagram(coap.encode(coap.NON, coap.UNAUTHORIZED, m.mid, m.token,
                                  [(coap.ECHO, b"0123456789")], b""), 1)
    again = take(w)
    assert nums(again) == [0, 1] and not w.done
    assert all(coap.decode(d).opt(coap.ECHO) == b"0123456789" for d in again)
    for d in again:
        w.on_datagram(answer(d, 64, 0), 2)
    assert sink.puts == [0, 16] and w.verdict is None


def test_a_report_rides_along_and_ends_the_run() -> None:
    sink = Sink()
    r = rtt.Rtt(initial_ms=100)
    w = burst.Window(PATH, 64 * 16, 0, sink, salt=5, step=1 << 20)
    w.ask(coap.Request(coap.POST, "r", payload=b"status"))
    w.start(0, r, Mids())
    sent = take(w)
    report = coap.decode(sent[0])
    assert report.mtype == coap.CON and report.code == coap.POST
    assert len(sent) == 1 + 16  # no SRTT yet: the first window is 16
    w.on_datagram(answer(sent[1], 64 * 16, 0), 3)
    assert not w.done
    w.on_datagram(coap.encode(coap.ACK, 0x44, report.mid, report.token, [], b"cmd"), 4)
    assert w.done and w.side_response.payload == b"cmd" and w.side is None
    w.start(4, r, Mids())  # the next run goes on where the window was
    assert not w.done and w.base == 1


def test_a_report_riding_along_does_not_double_the_windows_back_off() -> None:
    """Silence (an outage) with a report in flight: the report retransmits on its own timer,
    but only the window's timer doubles the shared timeout (both doing it took a 1.5 s outage
    to a 32 s wait: test_faults_scenarios.py::test_everything_at_once under load)."""
    sink = Sink()
    r = rtt.Rtt(initial_ms=100, min_ms=10)
    w = burst.Window(PATH, 64 * 16, 0, sink, salt=5, step=1 << 20, init_window=4)
    w.ask(coap.Request(coap.POST, "r", payload=b"status"))
    w.start(0, r, Mids())
    take(w)
    now, window_timeouts, reports = 0, 0, 0
    for _ in range(100):
        if w.done:
            break
        now = w.deadline
        before = w.timeouts
        w.on_timeout(now)
        window_timeouts += w.timeouts - before
        reports += sum(coap.decode(d).mtype == coap.CON for d in take(w))
    # the run ended when the report gave up, after its 4 retransmissions on its own timer
    assert w.done and w.side is None and w.side_response is None and reports == 4
    assert w.verdict is None and window_timeouts >= 3
    assert r.rto == 100 << window_timeouts  # doubled by the window's timer alone


def test_step_ends_a_run_for_persistence_and_resume_asks_only_the_rest() -> None:
    w, sink, r = started(size=8 * 16, init_window=8, step=64)
    for d in take(w)[:4]:
        w.on_datagram(answer(d, 128, 0), 1)
    assert w.done and w.offset == 64
    w2, sink2, _ = started(size=8 * 16, offset=64, init_window=8)
    assert nums(take(w2)) == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="block boundary"):
        burst.Window(PATH, 128, 0, sink, offset=20)


# -- the sink: writes at the offset, hashes in order by reading back ---------------------------

def test_fetch_as_sink_any_order_hashes_the_image(tmp_path: Path) -> None:
    size = 40 * 64 + 17
    data = image(size)
    slots = FileSlots(str(tmp_path / "slots"))
    slots.boot()
    f = Fetch(slots, "/" + PATH, size, hashlib.sha256(data).digest(), 64)
    f.start(0)
    r = rtt.Rtt(initial_ms=50, min_ms=10)
    w = burst.Window(PATH, size, f.szx, f, salt=99, max_window=16, step=1 << 20)
    w.start(0, r, Mids())
    now = 0
    for _ in range(200):
        if w.done:
            break
        sent = take(w)
        now += 10
        for d in reversed(sent):  # every round arrives backwards
            w.on_datagram(answer(d, size, 2), now)
        if not sent:
            now = w.deadline
            w.on_timeout(now)
    assert w.complete and f.offset == size and f.verified()
    assert Path(slots.path("b")).read_bytes() == data


def test_a_pipe_behind_the_window_gets_early_blocks_from_a_scratch_file(tmp_path: Path) -> None:
    """A compressed image (device/pipe.py needs its input in order) through the window, every
    round arriving backwards and its first answer lost once: early blocks wait in the park file,
    the decoded image reaches the slot, and the park file is gone after."""
    import random

    from device.pipe import DEFLATE, Parked, Pipe
    from proto import packing
    from sim import hostdeflate

    rnd = random.Random(7)
    target = bytes(rnd.randrange(4) for _ in range(40_000))  # compresses to ~10 KiB
    sent = packing.compress_image(target)
    slots = FileSlots(str(tmp_path / "slots"))
    slots.boot()
    pipe = Pipe(slots, len(target), hashlib.sha256(target).digest(), DEFLATE, False,
                lib=hostdeflate)
    f = Fetch(slots, "/" + PATH, len(sent), None, 256, pipe=pipe)
    f.start(0)
    park = tmp_path / "state.json.park"
    pipe.parked = Parked(f, str(park))
    w = burst.Window(PATH, len(sent), f.szx, pipe.parked, salt=3, max_window=8, step=1 << 20)
    pipe.parked.ring = w.span * 256
    r = rtt.Rtt(initial_ms=50, min_ms=10)
    w.start(0, r, Mids())
    now = 0
    lost: set[int] = set()
    parked = 0
    for _ in range(500):
        if w.done:
            break
        out = take(w)
        now += 10
        for d in reversed(out):
            num = nums([d])[0]
            if num not in lost:  # the first of a round is lost once
                lost.add(num)
                if d is out[0]:
                    continue
            w.on_datagram(answer(d, len(sent), 4, payload=sent[num * 256:(num + 1) * 256]), now)
            parked = max(parked, park.stat().st_size)
        if not out:
            now = w.deadline
            w.on_timeout(now)
    assert w.complete and w.verdict is None and f.offset == len(sent)
    assert 0 < parked <= w.span * 256  # early blocks waited there, within the ring
    assert f.verified()
    f.close()
    assert Path(slots.path("b")).read_bytes() == target and not park.exists()


def test_bad_data_behind_the_window_ends_it_corrupt(tmp_path: Path) -> None:
    from device.pipe import DEFLATE, Parked, Pipe
    from sim import hostdeflate

    slots = FileSlots(str(tmp_path / "slots"))
    slots.boot()
    pipe = Pipe(slots, 4096, b"\0" * 32, DEFLATE, False, lib=hostdeflate)
    f = Fetch(slots, "/" + PATH, 1024, None, 256, pipe=pipe)
    f.start(0)
    sink = Parked(f, str(tmp_path / "park"))
    w = burst.Window(PATH, 1024, f.szx, sink, salt=3, max_window=4, step=1 << 20)
    sink.ring = w.span * 256
    w.start(0, rtt.Rtt(initial_ms=50), Mids())
    out = take(w)
    for d in reversed(out):  # 3, 2, 1 wait in the park file; 0 is not deflate at all
        w.on_datagram(answer(d, 1024, 4, payload=b"\xff" * 256), 10)
    assert w.done and w.verdict == CORRUPT and "undecodable" in w.why
    sink.close()
    assert not (tmp_path / "park").exists()
