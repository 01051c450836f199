"""Every cap and expiry of the device bind's message layer (fake clocks), the rate limiter against
rotating sources and IPv6 prefixes, and, on a real gateway with ``--limit-loopback``: source
verification (4.01 + Echo, no amplification), libcoap's client through Echo, the report reply
cache, and observations ended by RST."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from pathlib import Path

import cbor2
import pytest
from aiocoap import CON, GET, NON, POST, RST, Message
from aiocoap.optiontypes import BlockOption
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from clock import Clock
from harness import GatewayProc, control, publish_image_sync

from gateway.observe import Observations
from gateway.ratelimit import Budgets, RateLimiter, exempt, host_key
from gateway.replies import Replies
from gateway.sources import ECHO_SECONDS, Sources
from proto.keys import ReportKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"limits key").digest())


def k(host: str) -> bytes:
    return host_key(host)


# ---- rate limiter ---------------------------------------------------------------------------
def test_host_budget_and_burst() -> None:
    clock = Clock()
    rl = RateLimiter(Budgets(rate=10, burst=20, net_rate=1000, total_rate=1000), clock=clock)
    assert sum(rl.allow(k("192.0.2.7")) for _ in range(100)) == 20  # the burst, then nothing
    clock.t += 1.0
    assert sum(rl.allow(k("192.0.2.7")) for _ in range(100)) == 10  # the rate
    assert sum(rl.allow(k("192.0.2.8")) for _ in range(100)) == 20  # another host: its own
    assert sum(rl.allow(k("::ffff:192.0.2.9")) for _ in range(100)) == 20  # v4-mapped = IPv4
    assert rl.dropped["host"] == 80 + 90 + 80 + 80


def test_verified_source_over_budget_is_told_to_slow_down() -> None:
    clock = Clock()
    rl = RateLimiter(Budgets(rate=10, burst=40, net_rate=1000, total_rate=5), clock=clock)
    for _ in range(40):
        assert rl.allow(k("192.0.2.7"), True)
    assert not rl.allow(k("192.0.2.7"), True)
    assert rl.slow_down(True) == 2  # 5.03, Max-Age: half the burst refills in 2 s
    assert RateLimiter().refusal_age == 0  # the default: 32 of 200/s, under a second
    for _ in range(40):
        rl.allow(k("192.0.2.9"))
    assert not rl.allow(k("192.0.2.9"))
    assert rl.slow_down(False) is None  # unverified: never answered (spoofable)
    answered = 0
    for _ in range(100):  # the 5.03s have a budget of their own (total_rate, burst 40)
        assert not rl.allow(k("192.0.2.7"), True)
        answered += rl.slow_down(True) is not None
    assert answered == 39 and rl.slowed == 40


def test_rotating_sources_get_no_fresh_allowance() -> None:
    """5,000 rotating hosts in one /24 range... and across /24s: the network budget, then the
    global one, bound what passes; cycling through them again gives nothing back (no LRU to
    evict from)."""
    clock = Clock()
    rl = RateLimiter(Budgets(rate=50, burst=50, net_rate=100, total_rate=400), clock=clock)
    passed = sum(rl.allow(k(f"10.0.0.{n % 250}")) for n in range(5000))
    assert passed == 100  # the /24's burst (net rate x host burst / host rate = 100)
    clock.t += 0.5
    passed = sum(rl.allow(k(f"10.{n >> 8 & 255}.{n & 255}.1")) for n in range(5000))
    assert passed == 400  # the global burst (400 = 400/s x 50/50), refilled in 0.5 s
    clock.t += 1 / 64
    again = sum(rl.allow(k(f"10.{n >> 8 & 255}.{n & 255}.1")) for n in range(5000))
    assert again == 6  # 1/64 s of the global budget: the same sources got nothing new


def test_verified_sources_skip_the_global_budget() -> None:
    clock = Clock()
    rl = RateLimiter(Budgets(rate=100, burst=10, net_rate=100, total_rate=10), clock=clock)
    assert sum(rl.allow(k(f"10.{n}.0.1")) for n in range(100)) == 10  # the global burst
    assert sum(rl.allow(k(f"10.{n // 10 + 200}.0.1"), verified=True) for n in range(100)) == 100


def test_ipv6_prefixes() -> None:
    """Per /64 (host) and per /48 (network): addresses within one /64 share a budget, and
    /64s within one /48 share the network budget."""
    clock = Clock()
    rl = RateLimiter(Budgets(rate=10, burst=10, net_rate=20, total_rate=10_000), clock=clock)
    assert sum(rl.allow(k(f"2001:db8:1:1::{n:x}")) for n in range(1000)) == 10
    assert sum(rl.allow(k(f"2001:db8:1:2::{n:x}")) for n in range(1000)) == 10
    assert sum(rl.allow(k(f"2001:db8:1:{n:x}::1")) for n in range(3, 1000)) == 0  # /48 spent
    assert sum(rl.allow(k(f"2001:db8:2:{n:x}::1")) for n in range(1000)) == 20  # another /48


def test_loopback_exempt_unless_asked() -> None:
    assert exempt(k("127.0.0.1"), False) and exempt(k("::1"), False)
    assert not exempt(k("::ffff:127.0.0.1"), True) and not exempt(k("192.0.2.1"), False)


# ---- sources, replies, observations --------------------------------------------------------
def test_sources_verify_expire_and_cap() -> None:
    clock = Clock()
    s = Sources(ttl=100, size=3, clock=clock)
    for n in range(5):
        s.verify(k(f"192.0.2.{n}"))
    assert len(s) == 3 and not s.verified(k("192.0.2.0")) and s.verified(k("192.0.2.4"))
    clock.t += 101
    assert not s.verified(k("192.0.2.4"))
    s.expire()
    assert len(s) == 0


def test_echo_is_bound_to_address_and_time() -> None:
    clock = Clock()
    s = Sources(clock=clock)
    echo = s.echo_for(k("192.0.2.1"))
    assert len(echo) == 10
    assert not s.check_echo(k("192.0.2.2"), echo)  # made for another address
    assert not s.check_echo(k("192.0.2.1"), echo[:-1] + bytes([echo[-1] ^ 1]))
    clock.t += ECHO_SECONDS + 1
    assert not s.check_echo(k("192.0.2.1"), echo)  # stale
    echo = s.echo_for(k("192.0.2.1"))
    assert s.check_echo(k("192.0.2.1"), echo) and s.verified(k("192.0.2.1"))


def test_reply_cache_per_device_cap_and_expiry() -> None:
    clock = Clock()
    r = Replies(size=2, lifetime=247, clock=clock)
    a = ("::ffff:192.0.2.1", 5000, 0, 0)
    r.put("dev-1", a, 7, b"report", b"answer")
    assert r.get("dev-1", a, 7, b"report") == b"answer"
    assert r.get("dev-1", a, 8, b"report") is None  # a new message: not a retransmission
    assert r.get("dev-1", ("::ffff:192.0.2.2", 5000, 0, 0), 7, b"report") is None
    r.put("dev-1", a, 8, b"report2", b"answer2")  # a device's flood overwrites its own slot
    assert len(r) == 1
    r.put("dev-2", a, 9, b"x", b"y")
    r.put("dev-3", a, 10, b"x", b"y")
    assert len(r) == 2 and r.get("dev-1", a, 8, b"report2") is None  # least recent evicted
    clock.t += 248
    assert r.get("dev-3", a, 10, b"x") is None
    r.expire()
    assert len(r) == 0


def test_observation_caps_expiry_and_reset() -> None:
    clock = Clock()
    obs = Observations(per_device=2, per_source=3, total=4, lifetime=300, clock=clock)
    src = k("192.0.2.1")
    assert obs.register("d1", src, ("a", 1), b"t1", []) is not None
    assert obs.register("d1", src, ("a", 2), b"t1", []) is not None
    assert obs.register("d1", src, ("a", 3), b"t1", []) is None  # per device
    assert obs.register("d1", src, ("a", 1), b"t1", []) is not None  # a refresh is not new
    assert obs.register("d2", src, ("a", 4), b"t1", []) is not None
    assert obs.register("d3", src, ("a", 5), b"t1", []) is None  # per source
    other = k("192.0.2.2")
    assert obs.register("d3", other, ("b", 1), b"t", []) is not None
    assert obs.register("d4", other, ("b", 2), b"t", []) is None  # in total
    assert len(obs) == 4 and obs.refused == 3
    o = next(iter(obs.of("d3")))
    o.mid = 77
    assert not obs.reset(other, ("b", 1), 78) and obs.reset(other, ("b", 1), 77)
    assert list(obs.of("d3")) == [] and len(obs) == 3
    clock.t += 200
    obs.register("d1", src, ("a", 1), b"t1", [])  # re-registered: lives on
    clock.t += 150
    assert [o.remote for o in obs.of("d1")] == [("a", 1)]
    obs.expire()
    assert len(obs) == 1


# ---- on a real gateway ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A gateway that treats loopback like any network, with one image."""
    gw = GatewayProc(tmp_path_factory.mktemp("limits") / "data",
                     ["--limit-loopback", "--rate-limit", "5000", "--rate-burst", "500",
                      "--observe-per-device", "2"]).start()
    data = os.urandom(5000)

    try:
        yield gw, data, publish_image_sync(gw, data, KEY, seq=5, device_class="esp32")
    finally:
        gw.stop()


def _exchange(sock: socket.socket, port: int, m: Message) -> tuple[bytes, Message]:
    sock.sendto(m.encode(), ("127.0.0.1", port))
    sock.settimeout(5)
    data, _ = sock.recvfrom(2048)
    return data, Message.decode(data)


def _get(path: str, mid: int, **opts) -> Message:  # type: ignore[no-untyped-def]
    m = Message(code=GET, uri_path=tuple(path.split("/")), **opts)
    m.mtype, m.mid, m.token = NON, mid, b"\x07"
    return m


def test_unverified_block_get_gets_echo_not_the_block(strict) -> None:
    gw, data, img = strict
    path = img["uri"][1:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.9", 0))
        req = _get(path, 1, block2=BlockOption.BlockwiseTuple(0, False, 6))
        raw, r = _exchange(s, gw.device_port, req)
        assert r.code.dotted == "4.01" and r.opt.echo is not None and r.payload == b""
        assert len(raw) <= 2 * len(req.encode())  # no amplification
        req = _get(path, 2, block2=BlockOption.BlockwiseTuple(1, False, 6), echo=r.opt.echo)
        _, r = _exchange(s, gw.device_port, req)
        assert r.code.dotted == "2.05" and r.payload == data[1024:2048]
        _, r = _exchange(s, gw.device_port, _get(path, 3, block2=BlockOption.BlockwiseTuple(
            2, False, 6)))  # verified now: no Echo needed
        assert r.code.dotted == "2.05" and r.payload == data[2048:3072]


def test_verified_flood_gets_503_max_age_unverified_gets_silence(strict) -> None:
    gw, data, img = strict
    path = img["uri"][1:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.11", 0))
        _, r = _exchange(s, gw.device_port, _get(path, 1))
        _, r = _exchange(s, gw.device_port, _get(path, 2, echo=r.opt.echo))
        assert r.code.dotted == "2.05"  # verified
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        rounds = []
        # 1,500 at once, far over the burst of 500; the bucket refills at 5,000/s while the
        # gateway works through them, so on a slow machine a round may see no 5.03: a few more
        for _ in range(4):
            for mid in range(3, 1503):
                s.sendto(_get(path, mid).encode(), ("127.0.0.1", gw.device_port))
            codes = []
            answers = []
            s.settimeout(2)  # after the last answer (some 5.03s may be withheld: their cap)
            for _ in range(1500):
                try:
                    raw = s.recv(2048)
                except TimeoutError:
                    break
                m = Message.decode(raw)
                codes.append(m.code.dotted)
                answers.append((m, len(raw)))
            rounds.append(codes)
            if "5.03" in codes:
                break
            time.sleep(0.2)  # the bucket fills again before the next round
    assert set(codes) <= {"2.05", "5.03"} and "5.03" in codes, [set(r) for r in rounds]
    # each 5.03 of the last round: Max-Age 0, the request's token, no payload, smaller than
    # the request (no amplification)
    small = len(_get(path, 1).encode())
    assert {(m.opt.max_age, m.token, m.payload, n < small) for m, n in answers
            if m.code.dotted == "5.03"} == {(0, b"\x07", b"", True)}
    assert rounds[0].count("2.05") >= 500  # the burst itself is served (none lost on the way)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # never verified: no answers
        s.bind(("127.0.0.12", 0))
        for mid in range(1, 1501):
            s.sendto(_get(path, mid).encode(), ("127.0.0.1", gw.device_port))
        s.settimeout(1)
        got = []
        for _ in range(1500):
            try:
                got.append(Message.decode(s.recv(2048)).code.dotted)
            except TimeoutError:
                break
    assert "5.03" not in got and got.count("4.01") < 1500


def _report(device: str, mid: int, token: bytes) -> Message:
    """A CON report of an idle device at seq 1."""
    m = Message(code=POST, uri_path=("r",), payload=cbor2.dumps(
        {ReportKey.ID: device, ReportKey.CLASS: "esp32", ReportKey.SEQ: 1,
         ReportKey.STATE: 0, ReportKey.RESULT: 0}))
    m.mtype, m.mid, m.token = CON, mid, token
    return m


def test_report_verifies_and_retransmission_gets_same_answer(strict) -> None:
    gw, data, img = strict
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.10", 0))
        m = _report("lim-1", 0x1234, b"\x01\x02")
        first, r = _exchange(s, gw.device_port, m)
        assert r.code.dotted == "2.04"
        again, _ = _exchange(s, gw.device_port, m)
        assert again == first
        _, r = _exchange(s, gw.device_port, _get(img["uri"][1:], 5))
        assert r.code.dotted == "2.05"  # the report verified this address
    assert gw.log_text().count("registered device=lim-1") == 1


async def test_observe_capped_and_ended_by_reset(strict, coap_client) -> None:
    gw, data, img = strict
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.11", 0))
        m = _report("obs-1", 1, b"\x01")
        assert _exchange(s, gw.device_port, m)[1].code.dotted == "2.04"
        got = []
        for n in range(3):  # --observe-per-device 2: the third is served but not observed
            req = _get("c/obs-1", 10 + n, observe=0)
            req.token = bytes([n])
            got.append(_exchange(s, gw.device_port, req)[1])
        assert [r.opt.observe is not None for r in got] == [True, True, False]
        assert got[0].opt.max_age == 300
        code, _ = await control(coap_client, gw, "POST", "camp", {"image": img["id"],
                                                                  "devices": ["obs-1"]})
        assert code == "2.01"
        s.settimeout(5)
        notes = [Message.decode(s.recvfrom(2048)[0]) for _ in range(2)]
        assert sorted(n.token for n in notes) == [b"\x00", b"\x01"]
        assert all(n.opt.observe is not None and n.payload for n in notes)
        for n in notes:  # we are not interested any more
            rst = Message(code=0)
            rst.mtype, rst.mid, rst.token = RST, n.mid, b""
            s.sendto(rst.encode(), ("127.0.0.1", gw.device_port))
        req = _get("c/obs-1", 20, observe=0)  # a free place again after the RSTs
        req.token = b"\x05"
        assert _exchange(s, gw.device_port, req)[1].opt.observe is not None


async def test_libcoap_client_fetches_through_echo(strict, tmp_path: Path) -> None:
    """libcoap's coap-client answers the 4.01 + Echo by repeating the request with it."""
    gw, data, img = strict
    out = tmp_path / "out.bin"
    p = await asyncio.create_subprocess_exec(
        "coap-client-notls", "-m", "get", "-b", "1024", "-B", "30", "-o", str(out),
        f"coap://127.0.0.1:{gw.device_port}{img['uri']}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    stdout, _ = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode == 0, stdout
    assert out.read_bytes() == data


async def test_retransmitted_sealed_report_is_answered_not_refused(tmp_path: Path,
                                                                    coap_client) -> None:
    """The reply cache is why a lost ACK costs nothing: the retransmission of a MACed report
    (same message id, same bytes) gets the first answer again, where applying it twice would
    be refused as a replay (its counter is no longer above the stored one)."""
    from device import auth as dauth
    from harness import control

    gw = GatewayProc(tmp_path / "data", ["--enrolled-only"]).start()
    try:
        code, dev = await control(coap_client, gw, "POST", "dev",
                                  {"id": "rx-1", "class": "esp32", "key": True})
        assert code == "2.01"
        sealer = dauth.ReportAuth(bytes.fromhex(dev["key"]), str(tmp_path / "ctr"))
        payload, _ = sealer.seal({ReportKey.ID: "rx-1", ReportKey.CLASS: "esp32",
                                  ReportKey.SEQ: 1, ReportKey.STATE: 0, ReportKey.RESULT: 0})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            m = Message(code=POST, uri_path=("r",), payload=payload)
            m.mtype, m.mid, m.token = CON, 0x0777, b"\x09"
            first, r = _exchange(s, gw.device_port, m)
            assert r.code.dotted == "2.04"
            again, _ = _exchange(s, gw.device_port, m)
            assert again == first
            m.mid = 0x0778  # a new message with the old counter is a replay
            _, r = _exchange(s, gw.device_port, m)
            assert r.code.dotted == "4.01"
    finally:
        assert gw.stop() == 0
