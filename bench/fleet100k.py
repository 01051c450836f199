"""A big campaign end to end: N protocol-level devices (``sim/fleetsim.py``) register, then a
canary + waves campaign of a small image runs until every device runs it. On SQLite with one
gateway, or on PostgreSQL with several (devices use them in turn).

    python bench/fleet100k.py -n 100000                       # SQLite, one gateway
    python bench/fleet100k.py -n 100000 --postgresql --gateways 2

Prints: registration time, campaign wall time, reports and reports/s (sim side), gateway CPU
and RSS (peak) per gateway, and the time of one `GET camp/1` (what `cc status 1` asks) and of
the real `cc status 1` command (Python start included) at the end. Timing on a shared machine
is noisy: say so next to the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from gateway_blocks import cpu_seconds, memory_kib  # noqa: E402
from harness import GatewayProc, control, publish_image  # noqa: E402
from pg import PgCluster  # noqa: E402

CLASS = "big"


async def run(args: argparse.Namespace) -> None:
    from aiocoap import Context

    work = Path(tempfile.mkdtemp(prefix="fota-bench-fleet-", dir=args.dir))
    work.chmod(0o755)  # the PostgreSQL cluster runs as the postgres user under root
    cluster = None
    extra = ["--auto-register", str(args.n + 10)]
    if args.postgresql:
        cluster = PgCluster(work / "pg", fsync=True).start()
        extra += ["--store", cluster.create_database("fleet")]
    gws = [GatewayProc(work / f"gw{k}", extra).start() for k in range(args.gateways)]
    ctx = await Context.create_client_context(transports=["udp6"])
    key = Ed25519PrivateKey.generate()
    trust = key.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw).hex()
    sim_out = open(work / "sim.json", "w")
    sim = None
    try:
        img = await publish_image(ctx, gws[0], os.urandom(args.image), key, seq=2,
                                  device_class=CLASS)
        cmd = [sys.executable, "-m", "sim.fleetsim", "-n", str(args.n), "--class", CLASS,
               "--until-seq", "2", "--wake", str(args.wake), "--spread", str(args.spread),
               "--concurrency", str(args.concurrency), "--duration", str(args.limit),
               "--every", "30", "--json", "--trust", trust]
        for gw in gws:
            cmd += ["--gateway", gw.device_uri]
        t_start = time.monotonic()
        sim = subprocess.Popen(cmd, cwd=REPO, stdout=sim_out, stderr=subprocess.DEVNULL)
        while True:
            code, summary = await control(ctx, gws[-1], "GET", "dev", query="summary")
            if summary["total"] >= args.n or time.monotonic() - t_start > args.limit:
                break
            await asyncio.sleep(2)
        t_reg = time.monotonic() - t_start
        print(f"{summary['total']} devices registered in {t_reg:.0f} s", flush=True)
        cpu0 = [cpu_seconds(gw.proc.pid) for gw in gws]
        t0 = time.monotonic()
        code, camp = await control(ctx, gws[0], "POST", "camp", {
            "image": img["id"], "all": True, "canary": max(1, args.n // 100), "wave": "25%",
            "defer": 5, "timeout": 7200})
        assert code == "2.01", camp
        last = ""
        while time.monotonic() - t0 < args.limit:
            code, camp = await control(ctx, gws[-1], "GET", f"camp/{camp['id']}")
            line = " ".join(f"{k}={v}" for k, v in sorted(camp["counts"].items()))
            if line != last:
                print(f"{time.monotonic() - t0:6.0f} s  {camp['state']:8} {line}", flush=True)
                last = line
            if camp["state"] != "running":
                break
            await asyncio.sleep(5)
        wall = time.monotonic() - t0
        t = time.monotonic()
        await control(ctx, gws[-1], "GET", f"camp/{camp['id']}")
        view_s = time.monotonic() - t
        t = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "cc", "--gateway", gws[-1].control_uri,
                            "status", str(camp["id"])], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        cc_s = time.monotonic() - t
        engine = f"PostgreSQL, {args.gateways} gateway(s)" if args.postgresql else "SQLite"
        print()
        print(f"engine {engine}; devices {args.n}; image {args.image} B; wake {args.wake} s")
        print(f"campaign {camp['state']}: {camp['counts']} in {wall:.0f} s")
        for k, gw in enumerate(gws):
            mem = memory_kib(gw.proc.pid)
            cpu = cpu_seconds(gw.proc.pid) - cpu0[k]
            print(f"gateway {k}: CPU {cpu:.0f} s in the campaign, RSS {mem['VmRSS'] / 1024:.0f} "
                  f"MB, peak {mem['VmHWM'] / 1024:.0f} MB")
        print(f"GET camp/1 (cc status 1's request): {view_s * 1000:.0f} ms; `cc status 1` "
              f"command: {cc_s:.2f} s (exit {p.returncode})")
    finally:
        if sim is not None:
            sim.send_signal(signal.SIGINT)
            try:
                sim.wait(30)
            except subprocess.TimeoutExpired:
                sim.kill()
        sim_out.close()
        try:
            s = json.loads((work / "sim.json").read_text().strip().splitlines()[-1])
            print(f"sim: {s['reports']} reports ({s['reports_per_s']}/s over the whole run), "
                  f"{s['blocks']} blocks, {s['retransmits']} retransmits, {s['timeouts']} "
                  f"timeouts, mean RTT {s['mean_rtt_ms']} ms, done {s['done']}")
        except (OSError, ValueError, IndexError, KeyError):
            print("sim: no summary (interrupted)")
        await ctx.shutdown()
        for gw in gws:
            gw.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=100_000, help="devices (100000)")
    p.add_argument("--postgresql", action="store_true", help="one PostgreSQL, --gateways")
    p.add_argument("--gateways", type=int, default=1)
    p.add_argument("--image", type=int, default=900, help="image bytes (900: one block)")
    p.add_argument("--wake", type=float, default=60.0, help="device wake interval, s")
    p.add_argument("--spread", type=float, default=60.0, help="first wakes over S s")
    p.add_argument("--concurrency", type=int, default=512, help="devices awake at once")
    p.add_argument("--limit", type=float, default=3600, help="give up after, s")
    p.add_argument("--dir", default=None, help="parent of the temp data dir")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
