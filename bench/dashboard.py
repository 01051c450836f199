"""Dashboard benchmark: how the HTTP views of a campaign of N jobs cost, against what the control
API hands cc for the same campaign (the anchor: ``GET camp/<n>`` with every job, CBOR).

    python bench/dashboard.py              # 10,000 devices, one campaign of 10,000 jobs
    python bench/dashboard.py -n 1000

Builds the data directory directly with SQL (the schema of gateway/store.py, events in the
fleet's own wording, 5 transitions per job), starts the real gateway with ``--http`` on it, and
times each request (median of 5, real HTTP/CoAP on loopback). Timings are wall clock on a
shared machine: compare rows of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import aiohttp  # noqa: E402
import cbor2  # noqa: E402
from aiocoap import GET, Context, Message  # noqa: E402

from dashboard_util import http_base  # noqa: E402
from gateway import rollout  # noqa: E402
from gateway.store import Store  # noqa: E402
from harness import GatewayProc  # noqa: E402

PATH = ["queued", "offered", "downloading", "downloaded", "updating", "succeeded"]


def build(data: Path, n: int) -> None:
    data.mkdir(parents=True)
    store = Store(data / "gateway.sqlite3")
    db = store.db
    t0 = time.time() - 3600
    policy = json.dumps(rollout.Policy.from_body({}).to_json())
    with store.transaction():
        db.executemany("INSERT INTO devices(id, class, seq, state, result, last_seen, address) "
                       "VALUES (?,?,?,?,?,?,?)",
                       [(f"dev-{i:05d}", "esp32", 2 if i % 10 else 1, 0, 1 if i % 10 else 20,
                         t0 + i * 0.3, f"[::1]:{1024 + i}") for i in range(n)])
        db.execute("INSERT INTO images(id, digest, size, seq, class, vendor, uri, manifest, "
                   "created) VALUES ('img2', ?, 65536, 2, 'esp32', 'v', '/f/img2', x'00', ?)",
                   ("ab" * 32, t0))
        db.execute("INSERT INTO campaigns(image, state, created, deadline, policy, released) "
                   "VALUES ('img2', 'done', ?, ?, ?, 0)", (t0, t0 + 86400, policy))
        jobs, events = [], []
        for i in range(n):
            last = "succeeded" if i % 10 else "failed"
            jobs.append((i + 1, 1, f"dev-{i:05d}", last, 1 if i % 10 else 20, 65536, t0 + i))
            steps = PATH if last == "succeeded" else PATH[:5] + ["failed"]
            for k in range(5):
                events.append((t0 + i * 0.3 + k * 20, f"dev-{i:05d}", 1, "job",
                               f"job {i + 1}: {steps[k]} -> {steps[k + 1]}; bench"))
        db.executemany("INSERT INTO jobs(id, campaign, device, state, result, size, updated) "
                       "VALUES (?,?,?,?,?,?,?)", jobs)
        events.sort()
        db.executemany("INSERT INTO events(time, device, campaign, kind, detail) "
                       "VALUES (?,?,?,?,?)", events)
    store.close()


async def timed(fn, repeat: int = 5) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        size = await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, size


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="devices and jobs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        build(data, args.n)
        gw = GatewayProc(data, ("--http", "127.0.0.1:0")).start(timeout=30)
        base = http_base(gw)
        ctx = await Context.create_client_context(transports=["udp6"])
        rows = []
        try:
            async with aiohttp.ClientSession() as http:
                def get(path: str):
                    async def go() -> int:
                        async with http.get(base + path) as r:
                            assert r.status == 200, (path, r.status)
                            return len(await r.read())
                    return go

                async def cc_view() -> int:
                    resp = await ctx.request(Message(code=GET,
                                                     uri=f"{gw.control_uri}/camp/1")).response
                    assert resp.code.is_successful()
                    assert len(cbor2.loads(resp.payload)["jobs"]) == args.n
                    return len(resp.payload)

                rows.append(("anchor: control API camp/1 (cc status, all jobs)",
                             *await timed(cc_view)))
                for label, path in [
                    ("campaign page: view + 50 jobs + failures", "/api/campaigns/1"),
                    ("campaign page, failed jobs, page 10", "/api/campaigns/1?state=failed&offset=450"),
                    ("campaign charts (first: parses the log)", "/api/campaigns/1/charts"),
                    ("overview (aggregates of all devices)", "/api/overview"),
                    ("devices page, search 'dev-09'", "/api/devices?q=dev-09"),
                    ("events, newest 100", "/api/events"),
                    ("/metrics", "/metrics"),
                ]:
                    if "charts" in path:  # the first call parses every transition
                        rows.append((label, *await timed(get(path), repeat=1)))
                        label = "campaign charts (cached, incremental)"
                    rows.append((label, *await timed(get(path))))
        finally:
            await ctx.shutdown()
            gw.stop()
    print(f"{args.n} devices, one campaign of {args.n} jobs, {5 * args.n} job events")
    print(f"{'request':55} {'ms':>8} {'bytes':>10}")
    for label, ms, size in rows:
        print(f"{label:55} {ms:8.1f} {size:10d}")


if __name__ == "__main__":
    asyncio.run(main())
