"""Campaign benchmark: N simulated devices (``fota-sim``, the real agent) through a full rollout
campaign on loopback. Reports wall time from ``POST camp`` to done, the gateway's CPU (utime +
stime from /proc) and RSS (now and peak), and the devices' report count.

    python bench/campaign.py                      # 1000 devices, canary 50, waves of 25 %
    python bench/campaign.py -n 200 --max-downloads 50

The simulator runs in its own process (the devices' CPU is not the gateway's). Not a test: a
1,000-device run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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
from harness import GatewayProc, control, publish_image, wait_devices  # noqa: E402

CLASS = "bench-class"


async def run(args: argparse.Namespace) -> None:
    from aiocoap import Context

    work = Path(tempfile.mkdtemp(prefix="fota-bench-campaign-"))
    gw = GatewayProc(work / "gw").start()
    key = Ed25519PrivateKey.generate()
    trust = key.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw).hex()
    ctx = await Context.create_client_context(transports=["udp6"])
    log = open(work / "sim.log", "wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "sim.main", "--devices", str(args.n), "--gateway", gw.device_uri,
         "--class", CLASS, "--trust", trust, "--wake", str(args.wake), "--state",
         str(work / "sim"), "--ack-timeout", "2"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        image = hashlib.sha256(b"bench").digest() * (args.image_kib * 32)
        img = await publish_image(ctx, gw, image, key, seq=2, device_class=CLASS)
        t_reg = time.monotonic()
        await wait_devices(ctx, gw, args.n, limit=300, poll=1)
        print(f"{args.n} devices registered in {time.monotonic() - t_reg:.1f} s", flush=True)
        pid = gw.proc.pid
        rss0 = memory_kib(pid)["VmRSS"]
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        body = {"image": img["id"], "all": True, "canary": args.canary, "wave": args.wave,
                "max_failures": "5%", "max_downloads": args.max_downloads, "defer": args.defer,
                "timeout": 3600}
        code, camp = await control(ctx, gw, "POST", "camp", body)
        assert code == "2.01", camp
        last = ""
        while time.monotonic() - t0 < args.limit:
            code, camp = await control(ctx, gw, "GET", f"camp/{camp['id']}")
            line = " ".join(f"{k}={v}" for k, v in sorted(camp["counts"].items()))
            if line != last:
                print(f"{time.monotonic() - t0:6.1f} s  {camp['state']:8} {line}", flush=True)
                last = line
            if camp["state"] in ("done", "paused", "cancelled"):
                break
            await asyncio.sleep(1)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        mem = memory_kib(pid)
        print()
        print(f"devices {args.n}, image {len(image)} B, canary {args.canary}, wave {args.wave}, "
              f"max downloads {args.max_downloads}, wake {args.wake} s")
        print(f"campaign {camp['state']}: {camp['counts']}")
        print(f"wall {wall:.1f} s, gateway CPU {cpu:.1f} s ({100 * cpu / wall:.0f}% of a core), "
              f"RSS {rss0 / 1024:.1f} MB before, {mem['VmRSS'] / 1024:.1f} MB after, "
              f"peak {mem['VmHWM'] / 1024:.1f} MB")
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()
        log.close()
        await ctx.shutdown()
        gw.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=1000, help="devices (1000)")
    p.add_argument("--image-kib", type=int, default=16, help="image size in KiB (16)")
    p.add_argument("--canary", type=int, default=50)
    p.add_argument("--wave", default="25%")
    p.add_argument("--max-downloads", type=int, default=100)
    p.add_argument("--defer", type=int, default=5, help="seconds over the cap (5)")
    p.add_argument("--wake", type=float, default=5.0, help="device wake interval, s (5)")
    p.add_argument("--limit", type=float, default=900, help="give up after, s (900)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
