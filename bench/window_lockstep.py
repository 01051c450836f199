"""Does a change to ``device/burst.py`` keep its behaviour? Two versions in lockstep, compared
after every event.

``bench/window_rounds.py --anchor REV`` compares figures of clean downloads at one loss rate;
this drives ``--anchor REV``'s ``burst.Window`` and the working tree's side by side through the
same random events (sans-IO, fake clock, seeded) and stops at the first difference in what
either does: the datagrams it sends (bytes, in order), ``deadline``, ``done``, ``verdict``,
``why``, its counters and congestion state, the sink's calls and the shared ``Rtt``. Per seed:
block size 16 B-1 KiB, a resume offset, window 1-32, step, salt and ETag drawn; loss 0-90 %,
duplicates, reordering, 5.03 with Max-Age, 4.01 with Echo, CON answers, rare wrong ETag,
Size2, Block2, payload length, 4.xx and 5.xx answers, garbage datagrams, a sink that finds
data bad, and a CON report riding along (answered piggybacked or separately); up to 30 runs of
the window, 20,000 events a seed.

    python bench/window_lockstep.py --anchor main --seeds 1000
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from device import burst, coap, rtt  # noqa: E402
from device.fetch import CORRUPT, GONE, RESTART  # noqa: E402
from window_rounds import anchor_burst  # noqa: E402

COMPARED = ("complete", "offset", "outgoing", "deadline", "done", "verdict", "why", "base",
            "span", "requests", "rerequests", "gap_losses", "probes", "copies", "timeouts",
            "duplicates", "slowed", "cwnd", "inflight", "salt", "first_ms", "done_ms", "reord",
            "hi", "held", "silent", "loss_avg", "etag", "echo")
RTT_STATE = ("srtt", "rttvar", "rto", "min_rtt", "samples")
MAX_RUNS = 30
MAX_EVENTS = 20000


class Sink:
    """Records the window's calls; finds data bad with probability ``bad`` (its own seed)."""

    def __init__(self, rng: random.Random, bad: float) -> None:
        self.rng, self.bad, self.log = rng, bad, []  # type: ignore[var-annotated]

    def put(self, off: int, data: bytes) -> bool:
        self.log.append(("put", off, bytes(data)))
        return self.rng.random() < self.bad

    def advance(self, off: int) -> bool:
        self.log.append(("advance", off))
        return self.rng.random() < self.bad / 4


def state(w: Any, sink: Sink, r: rtt.Rtt) -> dict[str, Any]:
    d: dict[str, Any] = {a: getattr(w, a) for a in COMPARED}
    resp = w.side_response
    d["side_response"] = None if resp is None else (resp.code, bytes(resp.payload))
    d["side"] = None if w.side is None else (w.side.token, w.side.deadline, w.side.done)
    d["rtt"] = tuple(getattr(r, a) for a in RTT_STATE)
    d["sink"] = list(sink.log)
    return d


class Mismatch(AssertionError):
    pass


def answer_block(m: Any, size: int, bs: int, szx: int, ev: random.Random,
                 p: dict[str, float]) -> bytes:
    """The server's answer to block GET ``m``: mostly right, sometimes refused or wrong."""
    num = coap.parse_block(coap.to_uint(m.opt(coap.BLOCK2)))[0]
    off = num * bs
    x = ev.random()
    if x < p["503"]:
        return coap.encode(coap.NON, 0xA3, m.mid, m.token,
                           [(coap.MAX_AGE, coap.uint(ev.choice([0, 1, 2])))], b"")
    if x < p["503"] + p["401"] and not m.opt(coap.ECHO):
        return coap.encode(coap.NON, 0x81, m.mid, m.token,
                           [(coap.ECHO, b"ECHO%d" % ev.randrange(3))], b"")
    rare = p["rare"]
    etag = b"E" * 8 if ev.random() > rare else b"F" * 8
    size2 = size if ev.random() > rare else size + 1
    bnum = num if ev.random() > rare else num + 1
    payload = bytes([num & 255]) * min(bs, size - off)
    if ev.random() < rare:
        payload += b"x"
    z = ev.random()
    code = 0x84 if z < rare else 0xA0 if z < 2 * rare else 0x88 if z < 3 * rare else 0x45
    opts = [(coap.ETAG, etag), (coap.BLOCK2, coap.uint(coap.block_value(bnum, off + bs < size, szx))),
            (coap.SIZE2, coap.uint(size2))]
    if ev.random() < rare:
        opts = opts[1:]
    return coap.encode(coap.NON if ev.random() > 0.05 else coap.CON, code, m.mid, m.token, opts,
                       payload)


def one(seed: int, mods: list[Any]) -> tuple[int, Any]:
    """One seed in lockstep; returns (events, verdict or 'complete' or 'open'); raises Mismatch."""
    rng = random.Random(seed)
    bs = 1 << (rng.randrange(0, 7) + 4)
    size = rng.randrange(1, 300 * 1024 if bs >= 256 else 8000)
    offset = rng.randrange(0, (size + bs - 1) // bs) * bs if rng.random() < 0.3 else 0
    kw = dict(offset=offset, max_window=rng.choice([1, 2, 3, 8, 16, 32, 32, 32]),
              init_window=rng.choice([None, None, 0, 1, 4, 40]), max_tries=rng.choice([2, 4, 8, 8]),
              step=rng.choice([1, 1024, 16384, 1 << 30]), salt=rng.getrandbits(33),
              etag=rng.choice([None, b"E" * 8]))
    szx = bs.bit_length() - 5
    loss = rng.choice([0, 0.05, 0.2, 0.3, 0.5, 0.9])
    dup, reorder = rng.choice([0, 0.1]), rng.choice([0, 0.2])
    p = {"503": rng.choice([0, 0, 0.1, 0.4]), "401": rng.choice([0, 0, 0.02]),
         "rare": rng.choice([0, 0, 0, 0.0005, 0.003])}
    bad = rng.choice([0, 0, 0.002])
    now = rng.choice([0, 5, 10 ** 9, 7 * 10 ** 11])
    rtt0 = rng.choice([20, 100, 1500])
    sink_seed = rng.getrandbits(64)
    ws, sinks, rtts, mids = [], [], [], []
    for mod in mods:
        sinks.append(Sink(random.Random(sink_seed), bad))
        ws.append(mod.Window("f/x", size, szx, sinks[-1], **kw))
        rtts.append(rtt.Rtt(initial_ms=2000))
        mids.append(iter(range(1, 1 << 30)))
    for r in rtts:
        for _ in range(seed % 5):
            r.sample(rtt0)
    ev = random.Random(sink_seed + 1)
    q: list[tuple[int, int, bytes]] = []
    n = events = 0

    def check(where: str) -> None:
        a, b = (state(w, sk, r) for w, sk, r in zip(ws, sinks, rtts))
        for k in a:
            if a[k] != b[k]:
                raise Mismatch(f"seed {seed}, event {events} ({where}): {k}: "
                               f"{a[k]!r:.300} != {b[k]!r:.300}")

    for _ in range(MAX_RUNS):
        ask = ev.random() < 0.4
        for w, r, mid in zip(ws, rtts, mids):
            if ask:
                w.ask(coap.Request(coap.POST, "r/x", payload=b"rep", con=True))
            w.start(now, r, (lambda mid=mid: next(mid)), rand=lambda: 0.5)
        check("start")
        while not ws[0].done and events < MAX_EVENTS:
            events += 1
            out = ws[0].outgoing
            for w in ws:
                w.outgoing = []
            for d in out:
                if ev.random() < loss:
                    continue
                m = coap.decode(d)
                if m.mtype == coap.ACK:
                    continue
                if m.mtype == coap.CON:  # the report: piggybacked, or an empty ACK then a CON
                    if ev.random() < 0.5:
                        a = coap.encode(coap.ACK, 0x44, m.mid, m.token, [], b"")
                    else:
                        a = coap.encode(coap.ACK, 0, m.mid, b"", [], b"")
                        n += 1
                        later = coap.encode(coap.CON, 0x44, 777 + n, m.token, [], b"ok")
                        heapq.heappush(q, (now + rtt0 + ev.randrange(0, 200), n, later))
                    n += 1
                    heapq.heappush(q, (now + rtt0 + ev.randrange(0, 50), n, a))
                    continue
                a = answer_block(m, size, bs, szx, ev, p)
                if ev.random() < loss:
                    continue
                for _ in range(2 if ev.random() < dup else 1):
                    n += 1
                    delay = rtt0 + ev.randrange(0, rtt0 // 5 + 1)
                    if ev.random() < reorder:
                        delay += ev.randrange(0, 3 * rtt0)
                    heapq.heappush(q, (now + delay, n, a))
            if ev.random() < 0.001:
                n += 1
                heapq.heappush(q, (now + 1, n, b"\x40"))  # garbage
            deadline = ws[0].deadline
            if q and (deadline is None or q[0][0] <= deadline):
                now, _, a = heapq.heappop(q)
                for w in ws:
                    w.on_datagram(a, now)
                check("datagram")
            else:
                now = max(now, deadline)
                for w in ws:
                    w.on_timeout(now)
                check("timeout")
        if ws[0].verdict is not None:
            return events, ws[0].verdict
        if ws[0].complete:
            return events, "complete"
        if events >= MAX_EVENTS:
            break
        now += ev.choice([0, 10, 5000])
    return events, "open"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anchor", default="main", help="git revision to compare with (main)")
    ap.add_argument("--seeds", type=int, default=500, help="seeds (500)")
    ap.add_argument("--first", type=int, default=0, help="first seed (0)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fota-lockstep-") as tmp:
        old = anchor_burst(args.anchor, Path(tmp))
        ends: Counter[Any] = Counter()
        total = 0
        try:
            for seed in range(args.first, args.first + args.seeds):
                events, end = one(seed, [old, burst])
                total += events
                ends[end] += 1
        except Mismatch as e:
            sys.exit(f"differs from {args.anchor}: {e}")
    names = {burst.FAILED: "FAILED", CORRUPT: "CORRUPT", GONE: "GONE", RESTART: "RESTART"}
    print(f"{args.seeds} seeds, {total} events: the same as {args.anchor} after every one; ends: "
          + ", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(ends.items(), key=str)))


if __name__ == "__main__":
    main()
