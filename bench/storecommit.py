"""Group commit against one fsync per report, on SQLite and on PostgreSQL, in one run.

Each cell runs ``--clients`` concurrent reporters for ``--seconds``, each sending a device report
to the store and waiting for its commit before the next (a closed loop, like devices waiting for
their answer). A report is the store work of ``Fleet.report`` for a known device: read the
device row, update it, write its state event. "one fsync per report" is the same engine with
batches of one (``max_batch=1``: a transaction per report, as the gateway does today);
"group commit" lets every report waiting share the next transaction. Both engines write to the
same disk (SQLite file and PostgreSQL cluster in one temp dir; PostgreSQL with ``fsync=on`` and
``synchronous_commit=on``, its defaults).

    python bench/storecommit.py                  # 256 clients, 5 s a cell
    python bench/storecommit.py --clients 64 --seconds 10 --dir /var/tmp

Timing numbers on a shared machine are noisy; the ratio of the two modes in one run, and the
commits count (fsyncs), are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from gateway.storage import Engine, backend_for  # noqa: E402
from pg import PgCluster  # noqa: E402


def report(device_id: str, k: int):  # type: ignore[no-untyped-def]
    def unit(repo):  # type: ignore[no-untyped-def]
        now = time.time()
        dev = repo.device(device_id)
        state = k % 4
        if dev is None:
            repo.add_reported_device(device_id, "bench", 1, state, 0, 0, "127.0.0.1:1", now)
            repo.event("registered", "class bench", device=device_id)
        else:
            repo.update_reported_device(device_id, "bench", 1, state, 0, 0, "127.0.0.1:1", now)
            repo.event("state", f"{dev['state']} -> {state}", device=device_id)
    return unit


async def cell(url: str, max_batch: int, clients: int, seconds: float, tag: str) -> dict:
    engine = Engine(backend_for(url), max_batch=max_batch)
    lat: list[float] = []
    stop = time.monotonic() + seconds

    async def client(c: int) -> None:
        k = 0
        while time.monotonic() < stop:
            t = time.monotonic()
            await engine.write(report(f"{tag}-{c}", k))
            lat.append(time.monotonic() - t)
            k += 1

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(client(c) for c in range(clients)))
    finally:
        engine.close()
    took = time.monotonic() - t0
    lat.sort()
    st = engine.stats
    return {"reports": st.units, "per_s": st.units / took, "commits": st.commits,
            "batch": st.units / max(st.commits, 1), "p50": lat[len(lat) // 2] * 1000,
            "p99": lat[int(len(lat) * 0.99)] * 1000}


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="fota-storecommit-", dir=args.dir))
    work.chmod(0o755)  # the cluster runs as the postgres user under root
    cluster = PgCluster(work / "pg", fsync=True).start()
    try:
        stores = {"SQLite": f"sqlite:///{work / 'bench.sqlite3'}",
                  "PostgreSQL": cluster.create_database("bench")}
        print(f"{args.clients} clients, {args.seconds:g} s per cell, data in {work}")
        print("| engine | mode | reports | reports/s | commits | reports/commit "
              "| p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|")
        for name, url in stores.items():
            rows = {}
            for mode, batch in (("one fsync per report", 1), ("group commit", 256)):
                r = rows[mode] = await cell(url, batch, args.clients, args.seconds,
                                            f"{mode[:3]}")
                print(f"| {name} | {mode} | {r['reports']} | {r['per_s']:.0f} | {r['commits']} "
                      f"| {r['batch']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} |", flush=True)
            ratio = rows["group commit"]["per_s"] / rows["one fsync per report"]["per_s"]
            print(f"| {name} | ratio | | {ratio:.1f}x | | | | |", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--dir", default=None, help="parent of the temp data dir (default: $TMPDIR)")
    asyncio.run(main(p.parse_args()))
