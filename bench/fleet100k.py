"""A big campaign end to end: N protocol-level devices (``sim/fleetsim.py``) register, then a
canary + waves campaign of a small image runs until every device runs it. On SQLite with one
gateway, or on PostgreSQL with several (devices use them in turn).

    python bench/fleet100k.py -n 100000                       # SQLite, one gateway
    python bench/fleet100k.py -n 100000 --postgresql --gateways 2

The fleet wakes as a real one does, seldom: every N / --idle-rate seconds (100,000 devices at
50 idle reports/s: every 2,000 s, +-10 %), and observes its command resource between wakes
(``fleetsim --observe``), so a released phase reaches its devices by notification (paced by
the gateway) instead of by everyone polling fast. The gateways run with Observe caps sized to
the fleet.

Prints: registration time, campaign wall time, reports and reports/s (sim side), gateway CPU
and RSS (peak) per gateway, and the time of one `GET camp/1` (what `cc status 1` asks) and of
the real `cc status 1` command (Python start included) at the end, with the bytes of its
answer. Timing on a shared machine is noisy: say so next to the numbers. ``--py-spy DIR``
records each gateway's stacks (py-spy, raw collapsed format) over the campaign.
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
    wake = args.wake or max(60.0, args.n / args.idle_rate)
    spread = args.spread or max(60.0, args.n / 400)
    cap = str(args.n + 100)
    extra = ["--auto-register", cap, "--observe-per-source", cap, "--observe-max", cap,
             "--observe-lifetime", str(int(wake * 1.5 + 60))]
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
               "--until-seq", "2", "--wake", str(wake), "--spread", str(spread),
               "--concurrency", str(args.concurrency), "--duration", str(2 * args.limit),
               "--every", "30", "--json", "--trust", trust, "--observe"]
        for gw in gws:
            cmd += ["--gateway", gw.device_uri]
        t_start = time.monotonic()
        sim = subprocess.Popen(cmd, cwd=REPO, stdout=sim_out, stderr=subprocess.DEVNULL)
        sim_cpu0 = cpu_seconds(sim.pid)
        while True:
            code, summary = await control(ctx, gws[-1], "GET", "dev", query="summary")
            if summary["total"] >= args.n or time.monotonic() - t_start > args.limit:
                break
            await asyncio.sleep(2)
        t_reg = time.monotonic() - t_start
        print(f"{summary['total']} devices registered in {t_reg:.0f} s", flush=True)
        cpu0 = [cpu_seconds(gw.proc.pid) for gw in gws]
        sim_cpu1 = cpu_seconds(sim.pid)
        spy = str(Path(sys.executable).with_name("py-spy"))
        spies = [subprocess.Popen([spy, "record", "--nonblocking", "--format", "raw",
                                   "-o", str(Path(args.py_spy) / f"gw{k}.txt"),
                                   "--pid", str(gw.proc.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for k, gw in enumerate(gws)] if args.py_spy else []
        t0 = time.monotonic()
        code, camp = await control(ctx, gws[0], "POST", "camp", {
            "image": img["id"], "all": True, "canary": max(1, args.n // 100), "wave": "25%",
            "defer": 5, "timeout": 7200})
        assert code == "2.01", camp
        last = ""
        while time.monotonic() - t0 < args.limit:
            code, camp = await control(ctx, gws[-1], "GET", f"camp/{camp['id']}",
                                       query="jobs=0")  # counts only, as `cc status --watch`
            line = " ".join(f"{k}={v}" for k, v in sorted(camp["counts"].items()))
            if line != last:
                print(f"{time.monotonic() - t0:6.0f} s  {camp['state']:8} {line}", flush=True)
                last = line
            if camp["state"] != "running":
                break
            await asyncio.sleep(5)
        wall = time.monotonic() - t0
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        sim_cpu = cpu_seconds(sim.pid) - sim_cpu1
        t = time.monotonic()
        await control(ctx, gws[-1], "GET", f"camp/{camp['id']}")
        view_s = time.monotonic() - t
        cc = [str(Path(sys.executable).with_name("cc")), "--gateway", gws[-1].control_uri,
              "status", str(camp["id"])]
        t = time.monotonic()
        p = subprocess.run(cc, cwd=REPO, capture_output=True, text=True, timeout=60)
        cc_s = time.monotonic() - t
        js = subprocess.run(cc + ["--json"], cwd=REPO, capture_output=True, timeout=60).stdout
        engine = f"PostgreSQL, {args.gateways} gateway(s)" if args.postgresql else "SQLite"
        print()
        print(f"engine {engine}; devices {args.n}; image {args.image} B; wake {wake:.0f} s "
              f"(first wakes over {spread:.0f} s), observing")
        print(f"campaign {camp['state']}: {camp['counts']} in {wall:.0f} s")
        print(f"sim CPU: {sim_cpu1 - sim_cpu0:.0f} s registering, {sim_cpu:.0f} s in the campaign")
        for k, gw in enumerate(gws):
            mem = memory_kib(gw.proc.pid)
            cpu = cpu_seconds(gw.proc.pid) - cpu0[k]
            print(f"gateway {k}: CPU {cpu:.0f} s in the campaign, RSS {mem['VmRSS'] / 1024:.0f} "
                  f"MB, peak {mem['VmHWM'] / 1024:.0f} MB")
        print(f"GET camp/1 (cc status 1's request): {view_s * 1000:.0f} ms; `cc status 1` "
              f"command: {cc_s:.2f} s (exit {p.returncode}, {len(p.stdout)} characters; "
              f"--json: {len(js)} bytes)")
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
                  f"timeouts, {s['held']} answered 5.03 (busy), mean RTT {s['mean_rtt_ms']} ms, "
                  f"done {s['done']}, observing "
                  f"{s['observing']} (refused {s['observe_refused']}), woken by a "
                  f"notification {s['notified']}")
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
    p.add_argument("--wake", type=float, default=0.0,
                   help="device wake interval, s (default: N / --idle-rate, at least 60)")
    p.add_argument("--idle-rate", type=float, default=50.0,
                   help="idle reports/s the whole fleet makes (sets the default --wake)")
    p.add_argument("--spread", type=float, default=0.0,
                   help="first wakes over S s (default: N / 400, at least 60)")
    p.add_argument("--py-spy", default=None, metavar="DIR",
                   help="record the gateways' stacks over the campaign into DIR")
    p.add_argument("--concurrency", type=int, default=512, help="devices awake at once")
    p.add_argument("--limit", type=float, default=3600, help="give up after, s")
    p.add_argument("--dir", default=None, help="parent of the temp data dir")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
