"""Fuzz the gateway and the device decoders with generated input (hypothesis).

For every resource of both binds (device: ``r``, ``c/<id>``, ``f/<id>``; control: ``blob/…``,
``fw``, ``dev``, ``dev/<id>``, ``camp``, ``camp/<n>``, ``camp/<n>/cancel``, ``ev``) it sends
``-n`` generated datagrams (default 10,000 per resource): CoAP messages with random types,
codes, tokens, message ids and options (known and unknown numbers, critical ones included,
Block1/Block2 with random values, random Uri-Path segments around the resource) carrying random
bytes, random CBOR, report-shaped maps with hostile values and CBOR bombs (deep nesting, huge
declared lengths, tags); plus plain random datagrams. Every ``PROBE_EVERY`` datagrams a valid
request must be answered, so the gateway is shown to be alive and serving *during* the run,
not only after it. The same generated payloads are fed to the device's decoders
(``device.cbor``, ``device.coap``, ``device.manifest``), which may only raise their own errors.

The fleet set up before the run (a device enrolled with a report key on an ``--enrolled-only``
gateway, an image, a campaign) must be exactly the same afterwards: devices (their counters
included), images, campaigns, jobs and events.

    python bench/fuzz.py                  # 10,000 per resource: ~120,000 datagrams
    python bench/fuzz.py -n 500 --seed 3

``tests/test_fuzz_gateway.py`` runs a small sample of the same on every test run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import select
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from proto.keys import CmdKey, ReportKey  # noqa: E402

POOL = 1000  # hypothesis examples per pool
PROBE_EVERY = 25  # datagrams between liveness probes: the ones before it were read, not
# lost in a full socket buffer (answered in order: one asyncio reader per socket)
PROBE_TIMEOUT = 5.0  # seconds a probe may take
DEVICE_ID = "fuzz-dev"
CLASS = "fuzz-class"

# ---- raw CoAP encoding (aiocoap cannot encode the malformed messages we want) ----------------
CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 1, 2, 3, 4
URI_PATH, CONTENT_FORMAT, URI_QUERY, BLOCK2, BLOCK1, SIZE1, OBSERVE = 11, 12, 15, 23, 27, 60, 6


def _nibble(n: int) -> tuple[int, bytes]:
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes([n - 13])
    return 14, struct.pack(">H", n - 269)


def encode(mtype: int, code: int, mid: int, token: bytes, options: list[tuple[int, bytes]],
           payload: bytes) -> bytes:
    """A CoAP datagram; options are sorted by number (as RFC 7252 demands)."""
    out = bytearray([0x40 | (mtype << 4) | len(token), code, mid >> 8, mid & 0xFF])
    out += token
    last = 0
    for num, value in sorted(options, key=lambda o: o[0]):
        d, dx = _nibble(num - last)
        ln, lx = _nibble(len(value))
        out.append(d << 4 | ln)
        out += dx + lx + value
        last = num
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def _uint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


# ---- strategies ------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats()
           | st.text(max_size=24) | st.binary(max_size=48))
cbor_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=6) | st.dictionaries(
        st.integers(-2, 12) | st.text(max_size=8), c, max_size=8),
    max_leaves=24)


def _bomb(kind: int, n: int) -> bytes:
    n = max(n, 1)
    return [
        b"\x81" * n + b"\x00",  # nested arrays
        b"\xa1\x00" * n + b"\x00",  # nested maps
        b"\x5b" + struct.pack(">Q", 2**64 - n),  # byte string of ~2^64 bytes, declared
        b"\x9b" + struct.pack(">Q", 2**63 + n),  # array of 2^63 items, declared
        b"\xbb" + struct.pack(">Q", 2**62 + n),  # map, declared huge
        b"\x9f" * n,  # indefinite arrays never closed
        b"\xd8\x1c" * n + b"\x00",  # shareable tags
        bytes.fromhex("d81c81d81d00"),  # a list that contains itself
        cbor2.dumps(cbor2.CBORTag(35, "(a*)*b" * n)),  # a regular expression
        cbor2.dumps(cbor2.CBORTag(5, [2**62, n])),  # a bigfloat with a huge exponent
        cbor2.dumps(cbor2.CBORTag(2, b"\xff" * min(n, 400))),  # a bignum
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {4: b"x" * 8}, b"\xa0", b"\x00" * 64])),
    ][kind % 12]


bombs = st.builds(_bomb, st.integers(0, 11), st.integers(1, 3000))
report_values = st.one_of(cbor_values, st.integers(0, 30), st.sampled_from(["", DEVICE_ID, "x" * 80]))
report_maps = st.dictionaries(st.sampled_from([int(k) for k in ReportKey] + [0, 11, 99]),
                              report_values, min_size=3, max_size=11)
command_maps = st.dictionaries(st.sampled_from([int(k) for k in CmdKey] + [0, 5]), cbor_values,
                               max_size=5)


def _dumps(v: Any) -> bytes:
    try:
        return cbor2.dumps(v)
    except Exception:  # e.g. a float NaN key collision: any bytes will do
        return b"\xf6"


payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=600),
    cbor_values.map(_dumps),
    report_maps.map(_dumps),
    bombs,
    st.binary(min_size=4000, max_size=5000),  # past every body limit
)
segments = st.one_of(st.text(max_size=12), st.sampled_from(
    ["..", ".", "", "r", "c", "f", "fw", "dev", "camp", "ev", "blob", "cancel", DEVICE_ID,
     "%2e%2e", "../../etc/passwd", "0", "1", "-1", "99999999999999999999", "\x00"]))
extra_options = st.lists(st.tuples(st.integers(1, 2100), st.binary(max_size=20)), max_size=4)


@dataclass
class Resource:
    bind: str  # "device" | "control"
    path: tuple[str, ...]
    methods: tuple[int, ...]
    query: bool = False



@st.composite
def skeletons(draw: Any, res: Resource) -> tuple[int, int, int, bytes, list[tuple[int, bytes]]]:
    """Everything of a datagram aimed at ``res`` but its payload: (type, code, mid, token,
    options). Payloads come from a separate pool (generating them per datagram is slow)."""
    path = list(res.path)
    how = draw(st.integers(0, 9))
    if how == 0:
        path.append(draw(segments))
    elif how == 1 and path:
        path[-1] = draw(segments)
    elif how == 2:
        path = draw(st.lists(segments, max_size=5))
    mtype = draw(st.sampled_from([CON, CON, CON, NON, ACK, RST]))
    code = draw(st.sampled_from(list(res.methods) * 4 + [GET, POST, PUT, DELETE, 0, 5, 0x45, 0xFF]))
    options = [(URI_PATH, s.encode("utf-8", "surrogatepass")[:255]) for s in path]
    if draw(st.booleans()):
        options.append((CONTENT_FORMAT, _uint(draw(st.sampled_from([60, 0, 50, 65535])))))
    if draw(st.integers(0, 3)) == 0:
        options.append((draw(st.sampled_from([BLOCK1, BLOCK2])),
                        _uint(draw(st.integers(0, 2**24 - 1)))))
    if draw(st.integers(0, 5)) == 0:
        options.append((SIZE1, _uint(draw(st.integers(0, 2**32 - 1)))))
    if draw(st.integers(0, 7)) == 0:
        options.append((OBSERVE, _uint(draw(st.integers(0, 2)))))
    if res.query and draw(st.booleans()):
        options.append((URI_QUERY, ("since=" + draw(st.text(max_size=20))).encode(
            "utf-8", "surrogatepass")[:255]))
    options += draw(extra_options)
    return mtype, code, draw(st.integers(0, 0xFFFF)), draw(st.binary(max_size=8)), options


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A random byte-level mutation: flips, truncation, insertion, duplication."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b[rng.randrange(len(b) + 1):0] = rng.randbytes(rng.randint(1, 8))
        elif b:
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 16)]
    return bytes(b)


class Corpus:
    """Hypothesis-generated pools (payloads, skeletons per resource), combined and mutated by
    a seeded ``random.Random`` into as many datagrams as asked: hypothesis gives the variety,
    the combination gives the volume (hypothesis alone makes ~60 of these per second)."""

    def __init__(self, seed_value: int, pool: int) -> None:
        self.seed = seed_value
        self.pool = pool
        self.payloads = generate(payloads, pool, seed_value)

    def datagrams(self, res: Resource, n: int, salt: int) -> list[bytes]:
        rng = random.Random(self.seed * 1000 + salt)
        skel = generate(skeletons(res), min(n, self.pool), self.seed + salt)
        out = []
        for _ in range(n):
            kind = rng.randrange(20)
            if kind == 0:
                out.append(rng.randbytes(rng.randint(0, 200)))  # plain garbage
                continue
            mtype, code, mid, token, options = rng.choice(skel)
            g = encode(mtype, code, rng.randrange(0x10000), token, options,
                       rng.choice(self.payloads))
            out.append(mutate(rng, g) if kind < 4 else g)
        return out


def generate(strategy: Any, n: int, seed_value: int) -> list[Any]:
    """``n`` examples of ``strategy``, reproducible from ``seed_value``."""
    out: list[Any] = []

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x: Any) -> None:
        out.append(x)

    collect()
    return out


# ---- the fleet under test -------------------------------------------------------------------
def resources(image_id: str) -> list[Resource]:
    # A digest nobody knows a preimage of: with sha256(b"some text") hypothesis, which mines
    # the literals of the code it runs in, once sent exactly "some text" and a blob was stored.
    digest = "5a" * 32
    return [
        Resource("device", ("r",), (POST,)),
        Resource("device", ("c", DEVICE_ID), (GET,)),
        Resource("device", ("f", image_id), (GET,)),
        Resource("control", ("blob", digest), (PUT,)),
        Resource("control", ("fw",), (GET, POST)),
        Resource("control", ("dev",), (GET, POST)),
        Resource("control", ("dev", DEVICE_ID), (GET,)),
        Resource("control", ("camp",), (GET, POST)),
        Resource("control", ("camp", "1"), (GET,)),
        Resource("control", ("camp", "2", "cancel"), (POST,)),  # 2 does not exist: 1 must live
        Resource("control", ("ev",), (GET,), query=True),
    ]


def snapshot(db_path: Path) -> dict[str, Any]:
    """Everything the fuzz must not change (read-only connection: the gateway holds the db)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out: dict[str, Any] = {}
        for table in ("devices", "images", "campaigns", "jobs"):
            out[table] = db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        out["events"] = db.execute("SELECT kind, device, detail FROM events ORDER BY id").fetchall()
        return out
    finally:
        db.close()


async def setup_fleet(gw: Any) -> str:
    """Enrol DEVICE_ID, publish an image for its class, start a campaign; returns the image id."""
    from aiocoap import Context
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from harness import control, publish_image

    ctx = await Context.create_client_context(transports=["udp6"])
    try:
        # enrolled with a report key on an --enrolled-only gateway: no generated report, however
        # well-formed, may change anything (the key is not given to the generator)
        code, _ = await control(ctx, gw, "POST", "dev", {"id": DEVICE_ID, "class": CLASS,
                                                          "key": True})
        assert code == "2.01", code
        img = await publish_image(ctx, gw, os.urandom(3000), Ed25519PrivateKey.generate(), seq=2,
                                  device_class=CLASS)
        code, camp = await control(ctx, gw, "POST", "camp",
                                   {"image": img["id"], "devices": [DEVICE_ID]})
        assert code == "2.01", (code, camp)
        return img["id"]
    finally:
        await ctx.shutdown()


# ---- sending --------------------------------------------------------------------------------
@dataclass
class Stats:
    sent: int = 0
    probes: int = 0
    answers: int = 0
    seconds: float = 0.0  # the whole run, generation included
    send_seconds: float = 0.0  # sending and probing only
    per_resource: dict[str, int] = field(default_factory=dict)


def probe(sock: socket.socket, port: int, request: bytes, token: bytes, stats: Stats) -> bool:
    """Send a valid CON request until its response comes (True) or PROBE_TIMEOUT passes."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    wait = 0.05  # a flood may have filled the gateway's socket buffer: retransmit soon, back off
    while time.monotonic() < deadline:
        sock.sendto(request, ("127.0.0.1", port))
        until = min(deadline, time.monotonic() + wait)
        wait = min(1.0, wait * 2)
        while (left := until - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, _ = sock.recvfrom(65536)
            stats.answers += 1
            if len(data) >= 4 + len(token) and data[4:4 + len(token)] == token and data[1] >= 0x40:
                return True
    return False


def blast(port: int, grams: list[bytes], probe_req: Callable[[int], tuple[bytes, bytes]],
          stats: Stats) -> None:
    """Send ``grams`` to 127.0.0.1:port, draining answers, probing every PROBE_EVERY."""
    # probes from their own socket: a fuzz datagram that reused a probe's message id from the
    # same address and port would make aiocoap answer the probe from its deduplication cache
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ps:
        s.bind(("127.0.0.1", 0))
        ps.bind(("127.0.0.1", 0))
        for i, g in enumerate(grams):
            s.sendto(g, ("127.0.0.1", port))
            stats.sent += 1
            while select.select([s], [], [], 0)[0]:
                s.recvfrom(65536)
                stats.answers += 1
            if (i + 1) % PROBE_EVERY == 0 or i + 1 == len(grams):
                req, token = probe_req(i)
                if not probe(ps, port, req, token, stats):
                    raise AssertionError(f"gateway did not answer a valid request after {i + 1} "
                                         f"fuzz datagrams to port {port}")
                stats.probes += 1


def probes(image_id: str) -> dict[str, Callable[[int], tuple[bytes, bytes]]]:
    def device(i: int) -> tuple[bytes, bytes]:
        token = b"P" + struct.pack(">I", i)
        return encode(CON, GET, (i * 7 + 1) & 0xFFFF, token,
                      [(URI_PATH, b"f"), (URI_PATH, image_id.encode()), (BLOCK2, _uint(0x06))],
                      b""), token

    def control(i: int) -> tuple[bytes, bytes]:
        token = b"Q" + struct.pack(">I", i)
        return encode(CON, GET, (i * 7 + 3) & 0xFFFF, token, [(URI_PATH, b"camp")], b""), token

    return {"device": device, "control": control}


# ---- the device decoders ----------------------------------------------------------------------
def feed_device_decoders(payloads_: list[bytes], grams: list[bytes]) -> int:
    """Only the decoders' own errors may come out; returns how many inputs were fed."""
    from device import cbor, coap, manifest

    trusted = [bytes(32)]
    n = 0
    for p in payloads_:
        try:
            cbor.loads(p)
        except cbor.CBORError:
            pass
        try:
            manifest.check(p, trusted, bytes(16), bytes(16), 0, "no-such-dir")  # no kid matches
        except manifest.Refused:
            pass
        n += 2
    for g in grams:
        try:
            coap.decode(g)
        except coap.CoapError:
            pass
        n += 1
    return n


def run(n: int, seed_value: int, data: Path, log: Callable[[str], None] = print,
        pool: int = POOL) -> Stats:
    """The whole fuzz run against a fresh gateway in ``data``; raises on any failure."""
    from harness import GatewayProc

    gw = GatewayProc(data, ["--enrolled-only"]).start()
    stats = Stats()
    try:
        image_id = asyncio.run(setup_fleet(gw))
        before = snapshot(gw.data / "gateway.sqlite3")
        make_probe = probes(image_id)
        ports = {"device": gw.device_port, "control": gw.control_port}
        t0 = time.monotonic()
        fed = 0
        corpus = Corpus(seed_value, min(n, pool))
        for k, res in enumerate(resources(image_id)):
            grams = corpus.datagrams(res, n, k)
            name = f"{res.bind}:{'/'.join(res.path)}"
            t = time.monotonic()
            blast(ports[res.bind], grams, make_probe[res.bind], stats)
            stats.send_seconds += time.monotonic() - t
            stats.per_resource[name] = len(grams)
            log(f"{name:36} {len(grams):6} datagrams in {time.monotonic() - t:5.1f} s")
            if not gw.alive():
                raise AssertionError(f"gateway died during {name}")
            fed += feed_device_decoders(corpus.payloads if k == 0 else [], grams)
        stats.seconds = time.monotonic() - t0
        after = snapshot(gw.data / "gateway.sqlite3")
        for key in before:
            if before[key] != after[key]:
                raise AssertionError(f"fuzzing changed the stored {key}: {before[key]!r} -> "
                                     f"{after[key]!r}")
        log(f"device decoders: {fed} inputs, only their own errors")
        text = gw.log_text()
        if "Traceback" in text:
            i = text.index("Traceback")
            raise AssertionError("the gateway logged a traceback:\n" + text[max(0, i - 600):i + 3000])
    finally:
        code = gw.stop() if gw.alive() else None
    if code != 0:
        raise AssertionError(f"gateway did not stop cleanly (exit {code})")
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="datagrams per resource")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fota-fuzz-") as tmp:
        stats = run(args.n, args.seed, Path(tmp) / "data")
    print(f"sent {stats.sent} datagrams to {len(stats.per_resource)} resources: "
          f"{stats.sent / stats.send_seconds:.0f}/s while sending ({stats.send_seconds:.1f} s; "
          f"{stats.seconds:.1f} s with generation), {stats.answers} answers, {stats.probes} "
          "liveness probes answered, gateway crashes: 0, no traceback, stored fleet unchanged")


if __name__ == "__main__":
    main()
