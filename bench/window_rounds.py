"""How many round trips a windowed download takes on a lossy link: many seeds, counts, no load.

``bench/lossy.py`` runs the real gateway, agent and relay, a handful of seeds an hour; this runs
only ``burst.Window`` (sans-IO) against a server one RTT away on a fake clock, the link's loss
drawn by the relay's own fault process (``sim.relay.FaultLink``, one per direction, seeded as
the relay seeds them), so a thousand downloads take seconds and the machine's load cannot blur
them. ``--anchor REV`` loads that revision's ``device/burst.py`` beside the working tree's and
runs both on the same seeds.

Per version: the window's span (first request to last block; what ``lossy.py`` reports as
"window download") in round trips, the share of downloads below issue 11's target (1.5 x
blocks / window x RTT; strictly below, because every round trip on a real link adds processing:
a span of exactly 6 RTT here is 9.0-9.1 s in ``lossy.py``) and below 17/18 of it (8.5 s for the
NB-IoT profile), and the window's bytes on air (requests and answers as sent, lost ones
included, plus 28 bytes of UDP/IPv4 each) per image byte. "failed": the window gave up
(``max_tries`` timeouts in a row without an answer; the agent tries again at its next wake),
counted in the downloads but not in the spans.

    python bench/window_rounds.py                               # the NB-IoT profile
    python bench/window_rounds.py --anchor 54b1e10 --seeds 1000
    python bench/window_rounds.py --rtt-ms 100 --loss 0.2 --blocks 256
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device import burst, coap, rtt  # noqa: E402
from sim.relay import Faults, FaultLink  # noqa: E402
from sim.windowclock import next_event  # noqa: E402

BS = 1024
SZX = 6
UDP_IPV4_HEADERS = 28
ETAG = b"E" * 8


def anchor_burst(rev: str, tmp: Path) -> ModuleType:
    """``device/burst.py`` as it was at ``rev``, imported next to this tree's (it finds the
    rest of ``device`` here, as it would have then: coap and fetch kept their interfaces)."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:device/burst.py"],
                         check=True, capture_output=True, text=True).stdout
    path = tmp / f"burst_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"device._burst_{rev}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Sink:
    def put(self, off: int, data: bytes) -> None:
        pass

    def advance(self, off: int) -> None:
        pass


def answer(req: bytes, size: int) -> bytes:
    """What the gateway's fast path sends for a NON block GET."""
    m = coap.decode(req)
    num = coap.parse_block(coap.to_uint(m.opt(coap.BLOCK2)))[0]
    off = num * BS
    opts = [(coap.ETAG, ETAG), (coap.BLOCK2, coap.uint(coap.block_value(num, off + BS < size, SZX))),
            (coap.SIZE2, coap.uint(size))]
    return coap.encode(coap.NON, 0x45, m.mid, m.token, opts, b"\0" * min(BS, size - off))


def one(mod: ModuleType, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    size = args.blocks * BS
    f = Faults(loss=args.loss)
    up = FaultLink(f, random.Random(f"{seed}/up"))
    down = FaultLink(f, random.Random(f"{seed}/down"))
    r = rtt.Rtt(initial_ms=2000)
    for _ in range(4):  # the reports before the download measured the link
        r.sample(args.rtt_ms)
    w = mod.Window("f/x", size, SZX, Sink(), max_window=args.window, step=1 << 30, salt=seed)
    mid = iter(range(1, 1 << 30))
    q: list[tuple[int, int, bytes]] = []
    now = n = air = 0
    half = args.rtt_ms // 2
    w.start(0, r, lambda: next(mid))
    while not w.complete and w.verdict is None and now < 1000 * args.rtt_ms:
        out, w.outgoing = w.outgoing, []
        for d in out:
            air += len(d) + UDP_IPV4_HEADERS
            if up.decide(0).verdict != "pass":
                continue
            a = answer(d, size)
            air += len(a) + UDP_IPV4_HEADERS
            if down.decide(0).verdict == "pass":
                n += 1
                heapq.heappush(q, (now + 2 * half, n, a))
        now, _ = next_event(w, q)
    if not w.complete:  # FAILED: max_tries timeouts in a row (the agent tries again later)
        return {"rtts": None, "air": air / size, "copies": getattr(w, "copies", 0)}
    return {"rtts": (w.done_ms - w.first_ms) / args.rtt_ms, "air": air / size,
            "copies": getattr(w, "copies", 0)}


def row(name: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rtts = sorted(x["rtts"] for x in runs if x["rtts"] is not None)
    failed = len(runs) - len(rtts)
    target = 1.5 * args.blocks / args.window
    below = sum(1 for x in rtts if x < target) / len(runs)
    well = sum(1 for x in rtts if x <= target * 17 / 18) / len(runs)
    q = statistics.quantiles(rtts, n=10)
    return (f"| {name} | {len(runs)} | {statistics.median(rtts):.2f} | {q[-1]:.2f} | {rtts[-1]:.2f} "
            f"| {below:.1%} | {well:.1%} | {statistics.mean(x['air'] for x in runs):.3f} "
            f"| {max(x['air'] for x in runs):.3f} | {statistics.mean(x['copies'] for x in runs):.1f} "
            f"| {failed} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=200, help="downloads per version (200)")
    p.add_argument("--blocks", type=int, default=128, help="image in 1 KiB blocks (128)")
    p.add_argument("--window", type=int, default=32, help="max_window (32, the agent's default)")
    p.add_argument("--rtt-ms", type=int, default=1500, help="round trip (1500)")
    p.add_argument("--loss", type=float, default=0.05, help="loss each way (0.05)")
    p.add_argument("--anchor", action="append", default=[], help="git revision to compare")
    args = p.parse_args()
    target = 1.5 * args.blocks / args.window
    print(f"{args.blocks} blocks of {BS} B, window {args.window}, RTT {args.rtt_ms} ms, "
          f"{args.loss:.0%} loss each way, seeds 1-{args.seeds}; target: span <= {target:g} RTT "
          f"({target * args.rtt_ms / 1000:g} s)\n")
    print("| burst.py | downloads | span median (RTT) | 90th pct | max | below target "
          "| <= 17/18 of it | bytes on air / image, mean | max | tail copies, mean | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="fota-rounds-") as tmp:
        versions = [(rev, anchor_burst(rev, Path(tmp))) for rev in args.anchor]
        for name, mod in versions + [("this tree", burst)]:
            runs = [one(mod, seed, args) for seed in range(1, args.seeds + 1)]
            print(row(name, runs, args), flush=True)


if __name__ == "__main__":
    main()
