"""Group commit against one commit per report, on SQLite and on PostgreSQL, in one run.

Each cell runs ``--clients`` concurrent reporters for ``--seconds``, each sending a device report
and waiting for its answer before the next (a closed loop, like devices waiting for theirs).
A report is the store work the device port hands over for it: ``DeviceAuth.check_report``
(the device's key) and ``Fleet.report`` of a known device whose state changed (the device as
it was, its update, the state event, its active job), through the gateway's ``StoreWorker``
as ``gateway/endpoint.py`` does. "one commit per report" runs every
report as its own transaction (what the gateway did on its event loop before group commit);
"group commit" lets the reports waiting share one transaction (the gateway now). Both
engines write to the same disk (SQLite file and PostgreSQL cluster in one temp dir;
PostgreSQL with ``fsync=on`` and ``synchronous_commit=on``, its defaults).

    python bench/storecommit.py                  # 256 clients, 5 s a cell, 3 rounds
    python bench/storecommit.py --clients 64 --seconds 10 --rounds 5 --dir /var/tmp
    python bench/storecommit.py --engines sqlite --rounds 5

Timing numbers on a shared machine are noisy (the one-commit rate follows the disk's fsync
time, which follows the load): each round runs both modes back to back, and the ratio per
round, its median, and the commits count are what to read; "CPU µs/report" is the process's
CPU time (both threads, system time included) per report, which the load moves far less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from gateway.blobs import BlobStore  # noqa: E402
from gateway.devauth import DeviceAuth  # noqa: E402
from gateway.fleet import Fleet  # noqa: E402
from gateway.requests import Report  # noqa: E402
from gateway.storage.worker import StoreWorker  # noqa: E402
from gateway.store import Store  # noqa: E402
from pg import PgCluster  # noqa: E402
from proto.keys import ReportKey  # noqa: E402


async def cell(url: str, blobs: BlobStore, grouped: bool, clients: int, seconds: float,
               tag: str) -> dict:
    store = Store(url)
    fleet = Fleet(store, blobs, auto_register=10**9)
    auth = DeviceAuth(store)
    worker = StoreWorker(store)
    lat: list[float] = []
    stop = time.monotonic() + seconds
    commits = store.commits

    async def client(c: int) -> None:
        k = 0
        while time.monotonic() < stop:
            r = Report(id=f"{tag}-{c}", cls="bench", seq=1, state=k % 4, result=0, progress=0,
                       job=None, size=None, target=None)
            m = {ReportKey.ID: r.id, ReportKey.CLASS: r.cls, ReportKey.SEQ: r.seq,
                 ReportKey.STATE: r.state, ReportKey.RESULT: r.result}
            t = time.monotonic()
            await worker.call(lambda: (auth.check_report(m), fleet.report(r, "127.0.0.1:5683")),
                              grouped=grouped, device=r.id)
            lat.append(time.monotonic() - t)
            k += 1

    t0, cpu = time.monotonic(), time.process_time()
    try:
        await asyncio.gather(*(client(c) for c in range(clients)))
    finally:
        worker.close()
        store.close()
    took, cpu = time.monotonic() - t0, time.process_time() - cpu
    lat.sort()
    n, commits = len(lat), store.commits - commits
    return {"reports": n, "per_s": n / took, "commits": commits, "batch": n / max(commits, 1),
            "p50": lat[n // 2] * 1000, "p99": lat[int(n * 0.99)] * 1000, "cpu": cpu / n * 1e6}


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="fota-storecommit-", dir=args.dir))
    work.chmod(0o755)  # the cluster runs as the postgres user under root
    cluster = PgCluster(work / "pg", fsync=True).start()
    try:
        stores = {"SQLite": f"sqlite:///{work / 'bench.sqlite3'}",
                  "PostgreSQL": cluster.create_database("bench")}
        stores = {k: v for k, v in stores.items() if k.lower() in args.engines}
        print(f"{args.clients} clients, {args.seconds:g} s per cell, {args.rounds} round(s) of "
              f"both modes back to back, data in {work}")
        print("| engine | round | mode | reports | reports/s | commits | reports/commit "
              "| p50 ms | p99 ms | CPU µs/report | load |\n" + "|---" * 11 + "|")
        blobs = BlobStore(work / "blobs")
        for name, url in stores.items():
            ratios = []
            for k in range(1, args.rounds + 1):
                rows = {}
                for mode, grouped in (("one commit per report", False), ("group commit", True)):
                    r = rows[mode] = await cell(url, blobs, grouped, args.clients, args.seconds,
                                                f"{mode[:3]}{k}")
                    print(f"| {name} | {k} | {mode} | {r['reports']} | {r['per_s']:.0f} "
                          f"| {r['commits']} | {r['batch']:.1f} | {r['p50']:.1f} "
                          f"| {r['p99']:.1f} | {r['cpu']:.1f} | {os.getloadavg()[0]:.1f} |",
                          flush=True)
                ratios.append(rows["group commit"]["per_s"] / rows["one commit per report"]["per_s"])
                print(f"| {name} | {k} | ratio | | {ratios[-1]:.1f}x | | | | | | |", flush=True)
            print(f"| {name} | all | median ratio | | {statistics.median(ratios):.1f}x "
                  f"({min(ratios):.1f}-{max(ratios):.1f}) | | | | | | |", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3, help="anchor then group, this often")
    p.add_argument("--engines", type=lambda v: v.lower().split(","),
                   default=["sqlite", "postgresql"], help="sqlite,postgresql (both: default)")
    p.add_argument("--dir", default=None, help="parent of the temp data dir (default: $TMPDIR)")
    asyncio.run(main(p.parse_args()))
