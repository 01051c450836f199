"""Group commit against one commit per report, on SQLite and on PostgreSQL, in one run, for this
checkout and for an earlier version of the gateway (``--before``) side by side.

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

Every cell runs in a fresh process (``--cell``) on the code of one version: this checkout, or
``--before REV`` (default 54b1e10, main before issue 14's per-report work; ``git archive``
into the temp dir; ``--before none``: this checkout only), each version on its own database.

    python bench/storecommit.py                  # 256 clients, 5 s a cell, 3 rounds
    python bench/storecommit.py --clients 64 --seconds 10 --rounds 5 --dir /var/tmp
    python bench/storecommit.py --engines sqlite --rounds 5 --before none

Timing numbers on a shared machine are noisy (the one-commit rate follows the disk's fsync
time, which follows the load): each round runs both modes of both versions back to back; the
ratio per round (group commit of a version over one commit per report of the same version; and
this checkout's group commit over the earlier version's one commit per report, "vs before"),
its median, and the commits count are what to read; "CPU µs/report" is the cell's CPU time (both
threads, system time included) per report, which the load moves far less. The disk's fsync
time (a 4 KiB write and ``fsync`` in the data dir, median of 200) is printed first. Each
database is warmed up first (2 s of one commit per report: a fresh file's first commits grow
it, and are slower). Since migration 8 a cell also files the events by device every second, as
the gateway's sweeper does (the commits count includes those transactions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BEFORE = "54b1e10"


async def cell(args: argparse.Namespace) -> dict:
    """One cell, in this process, on the code under ``args.root``."""
    sys.path[:0] = [str(args.root), str(args.root / "tests")]
    from gateway.blobs import BlobStore
    from gateway.devauth import DeviceAuth
    from gateway.fleet import Fleet
    from gateway.requests import Report
    from gateway.storage.worker import StoreWorker
    from gateway.store import Store
    from proto.keys import ReportKey

    store = Store(args.url)
    fleet = Fleet(store, BlobStore(Path(args.blobs)), auto_register=10**9)
    auth = DeviceAuth(store)
    worker = StoreWorker(store)
    grouped, tag = args.grouped, args.tag
    lat: list[float] = []
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

    async def sweeper() -> None:
        """What the gateway's sweeper does every second for reports: file the events by
        device (since migration 8; before, each event's insert wrote its index entry)."""
        while True:
            await asyncio.sleep(1.0)
            await worker.call(store.file_events)

    filing = hasattr(store, "file_events")
    while filing and await worker.call(store.file_events):
        pass  # what the cells before left (a gateway's sweeper never lets it pile up)
    stop = time.monotonic() + args.seconds
    t0, cpu = time.monotonic(), time.process_time()
    sweeping = asyncio.ensure_future(sweeper()) if filing else None
    try:
        await asyncio.gather(*(client(c) for c in range(args.clients)))
    finally:
        if sweeping is not None:
            sweeping.cancel()
            await asyncio.gather(sweeping, return_exceptions=True)
        worker.close()
        store.close()
    took, cpu = time.monotonic() - t0, time.process_time() - cpu
    lat.sort()
    n, commits = len(lat), store.commits - commits
    return {"reports": n, "per_s": n / took, "commits": commits, "batch": n / max(commits, 1),
            "p50": lat[n // 2] * 1000, "p99": lat[int(n * 0.99)] * 1000, "cpu": cpu / n * 1e6,
            "load": os.getloadavg()[0]}


def run_cell(root: Path, url: str, blobs: Path, grouped: bool, tag: str,
             args: argparse.Namespace, seconds: float | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", "--root", str(root),
           "--url", url, "--blobs", str(blobs), "--tag", tag, "--clients", str(args.clients),
           "--seconds", str(seconds or args.seconds)] + (["--grouped"] if grouped else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds * 10 + 120)
    if p.returncode != 0:
        raise RuntimeError(f"cell {tag} failed: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def fsync_ms(where: Path, n: int = 200) -> float:
    """Median time of a 4 KiB write and fsync of one file in ``where`` (ms)."""
    times = []
    fd = os.open(where / "fsync.probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for k in range(n):
            t = time.perf_counter()
            os.pwrite(fd, os.urandom(4096), (k % 16) * 4096)
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(where / "fsync.probe")
    return statistics.median(times) * 1000


def before_tree(rev: str, work: Path) -> Path:
    """The gateway as it was at ``rev`` (what a cell imports), extracted under ``work``."""
    out = work / f"before-{rev}"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "gateway", "proto"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from pg import PgCluster

    work = Path(tempfile.mkdtemp(prefix="fota-storecommit-", dir=args.dir))
    work.chmod(0o755)  # the cluster runs as the postgres user under root
    cluster = PgCluster(work / "pg", fsync=True).start()
    try:
        versions = [("", REPO)]
        if args.before != "none":
            versions.insert(0, (f" (before, {args.before})", before_tree(args.before, work)))
        stores = {}
        for label, root in versions:
            key = label and "before"
            stores[("SQLite", label)] = (root, f"sqlite:///{work / f'bench{key}.sqlite3'}")
            stores[("PostgreSQL", label)] = (root, cluster.create_database(f"bench{key}"))
        engines = [e for e in ("SQLite", "PostgreSQL") if e.lower() in args.engines]
        for (engine, _), (root, url) in stores.items():  # a fresh file's first commits grow
            if engine in engines:  # it (slow fsyncs): not what a cell measures
                run_cell(root, url, work / "blobs", False, "warm", args, seconds=2.0)
        print(f"{args.clients} clients, {args.seconds:g} s per cell, {args.rounds} round(s) of "
              f"both modes of {len(versions)} version(s) back to back, data in {work}; fsync of "
              f"a 4 KiB write there: {fsync_ms(work):.2f} ms (median of 200); load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print("| engine | round | mode | reports | reports/s | commits | reports/commit "
              "| p50 ms | p99 ms | CPU µs/report | load |\n" + "|---" * 11 + "|")
        for engine in engines:
            ratios: dict[str, list[float]] = {label: [] for label, _ in versions}
            if len(versions) > 1:
                ratios[" vs before"] = []  # this checkout's group commit / before's one commit
            for k in range(1, args.rounds + 1):
                anchor = 0.0
                for label, _ in versions:
                    root, url = stores[(engine, label)]
                    rows = {}
                    for mode, grouped in (("one commit per report", False),
                                          ("group commit", True)):
                        r = rows[mode] = run_cell(root, url, work / "blobs", grouped,
                                                  f"{mode[:3]}{k}", args)
                        print(f"| {engine}{label} | {k} | {mode} | {r['reports']} "
                              f"| {r['per_s']:.0f} | {r['commits']} | {r['batch']:.1f} "
                              f"| {r['p50']:.1f} | {r['p99']:.1f} | {r['cpu']:.1f} "
                              f"| {r['load']:.1f} |", flush=True)
                    ratio = rows["group commit"]["per_s"] / rows["one commit per report"]["per_s"]
                    ratios[label].append(ratio)
                    print(f"| {engine}{label} | {k} | ratio | | {ratio:.1f}x | | | | | | |",
                          flush=True)
                    anchor = anchor or rows["one commit per report"]["per_s"]
                if len(versions) > 1:
                    ratio = rows["group commit"]["per_s"] / anchor
                    ratios[" vs before"].append(ratio)
                    print(f"| {engine} vs before | {k} | group commit / before's one commit "
                          f"| | {ratio:.1f}x | | | | | | |", flush=True)
            for label, got in ratios.items():
                print(f"| {engine}{label} | all | median ratio | | "
                      f"{statistics.median(got):.1f}x ({min(got):.1f}-{max(got):.1f}) "
                      "| | | | | | |", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3, help="both modes of each version, this often")
    p.add_argument("--engines", type=lambda v: v.lower().split(","),
                   default=["sqlite", "postgresql"], help="sqlite,postgresql (both: default)")
    p.add_argument("--before", default=DEFAULT_BEFORE,
                   help=f"git revision to compare with (default {DEFAULT_BEFORE}; none: skip)")
    p.add_argument("--dir", default=None, help="parent of the temp data dir (default: $TMPDIR)")
    # one cell in this process (what the runs above start)
    p.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, default=REPO, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--blobs", help=argparse.SUPPRESS)
    p.add_argument("--tag", default="c", help=argparse.SUPPRESS)
    p.add_argument("--grouped", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.cell:
        print(json.dumps(asyncio.run(cell(a))))
    else:
        main(a)
