"""The smallest heap for the flow tests/upy.HEAP_BUDGET enforces, and its margin.

``tests/test_upy_agent.py::test_full_update_installs_the_bundle_and_runs_the_new_app`` runs a
full update (an app bundle with 40 kB of data: report, verify, download, install, reboot,
confirm) through ``main.py`` with its app on file slots, on the real MicroPython unix port
against the real gateway, under ``-X heapsize=HEAP_BUDGET``, and fails on any out-of-RAM on the
way. This bench bisects ``-X heapsize`` over that same flow (256 B steps, a fresh board per
probe, strict: no out-of-RAM) and prints the minimum per round, with ``--key`` for a board
with a report key. bench/footprint.py measures the agent under its own driver, with an
anchor revision in the same run.

    python bench/heapbudget.py                # ~3 min
    python bench/heapbudget.py --runs 3 --key
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import GatewayProc  # noqa: E402
from test_upy_agent import BIG, CLASS, new_app, updated  # noqa: E402
from upy import CC, HEAP_BUDGET, Board  # noqa: E402

from cc import bundle  # noqa: E402


def kib(spec: str) -> float:
    return float(spec[:-1]) if spec.endswith("k") else int(spec) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="bisections per board kind")
    ap.add_argument("--lo", type=float, default=48, help="KiB known too small")
    ap.add_argument("--hi", type=float, default=96, help="KiB known enough")
    ap.add_argument("--key", action="store_true", help="also a board with a report key")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="heapbudget-") as t:
        tmp = Path(t)
        gw = GatewayProc(tmp / "gw").start()
        try:
            cc = CC(gw, tmp)
            trust = cc.keys()
            img = cc.firmware(bundle.pack(new_app(tmp, 2, size=BIG)), seq=2, device_class=CLASS)
            n = 0

            def fits(heap: int, keyed: bool) -> bool:
                nonlocal n
                n += 1
                name = f"b{n}"
                extra = {}
                if keyed:
                    extra["key"] = cc.json("devices", "add", name, "--class", CLASS, "--key")["key"]
                board = Board.provision(tmp / name, gw, name, CLASS, trust, **extra)
                first = board.power_on(wakes=1)  # registers, in the default (large) heap
                assert not first.crashed, first
                board.heap = str(heap)
                cc.upgrade(img["id"], name)
                runs = board.run_until(updated, power_ons=4, wakes=8)
                return (all(not r.crashed and "out of RAM" not in r.out for r in runs)
                        and board.state().get("seq") == 2 and board.running() == "b")

            for keyed in (False, True) if a.key else (False,):
                for r in range(a.runs):
                    lo, hi = int(a.lo * 1024), int(a.hi * 1024)
                    assert fits(hi, keyed), f"{a.hi} KiB is not enough"
                    while hi - lo > 256:
                        mid = (lo + hi) // 2 // 256 * 256
                        if fits(mid, keyed):
                            hi = mid
                        else:
                            lo = mid
                    rows.append(("with a report key" if keyed else "plain", r + 1, hi / 1024))
        finally:
            gw.stop()
    budget = kib(HEAP_BUDGET)
    print(f"| board (main.py, app bundle, {BIG} B of app data) | round | smallest heap, no "
          f"out-of-RAM | margin to HEAP_BUDGET ({HEAP_BUDGET}) |")
    print("| --- | --- | --- | --- |")
    for kind, r, need in rows:
        print(f"| {kind} | {r} | {need:g} KiB | {budget - need:+g} KiB |")


if __name__ == "__main__":
    main()
