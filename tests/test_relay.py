"""The fault-injecting relay does what each fault says, over real UDP sockets on loopback.

The fault process is checked twice: statistically on the sans-IO ``FaultLink`` (many draws, no
sockets, fixed seeds), and end to end through a ``Relay`` in front of a plain UDP echo server,
where the datagrams that survive are exactly those a ``FaultLink`` of the same seed lets through
(its decisions depend on the order of datagrams only). Outages and cuts run on a hand-set clock.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from clock import Clock

from sim.relay import (DOWN, UP, Burst, Decision, FaultLink, Faults, Relay, build_parser,
                       faults_from_args, main)

ROOT = Path(__file__).resolve().parent.parent
LO = "127.0.0.1"


# -- helpers ---------------------------------------------------------------------------------


class Echo(asyncio.DatagramProtocol):
    """UDP echo server that remembers who sent what (the relay's upstream side)."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, tuple]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.mute = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.seen.append((data, addr))
        if not self.mute:
            assert self.transport is not None
            self.transport.sendto(data, addr)

    @property
    def ports(self) -> list[int]:
        out: list[int] = []
        for _, addr in self.seen:
            if not out or out[-1] != addr[1]:
                out.append(addr[1])
        return out


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes]] = []
        self.arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.got.append((time.monotonic(), data))
        self.arrived.set()

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    @property
    def payloads(self) -> list[bytes]:
        return [d for _, d in self.got]


@pytest.fixture
async def echo():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Echo, local_addr=(LO, 0))
    proto.address = transport.get_extra_info("sockname")
    yield proto
    transport.close()


async def client_for(relay: Relay) -> Client:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Client, remote_addr=relay.address[:2])
    return proto


async def until(pred: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait until ``pred()`` holds, polling each millisecond, ``limit`` seconds at most."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    for _ in range(int(limit * 1000)):
        if pred():
            return
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.001)
    raise AssertionError(f"not within {limit} s: {what}")


async def answered(c: Client, payload: bytes, limit: float) -> bool:
    """Whether ``payload`` comes back within ``limit`` seconds."""
    try:
        await until(lambda: payload in c.payloads, "", limit)
        return True
    except AssertionError:
        return False


def settled(r: Relay, echo: Echo, c: Client, n: int) -> bool:
    """The relay has read ``n`` datagrams and every one is accounted for, both ways: dropped,
    or sent (a duplicate twice) and received by the echo server, then by the client."""
    up, down = r.counters[UP], r.counters[DOWN]
    return (up.datagrams_in == n and up.datagrams_in + up.duplicated == up.datagrams_out + up.dropped
            and len(echo.seen) == up.datagrams_out == down.datagrams_in
            and down.datagrams_in + down.duplicated == down.datagrams_out + down.dropped
            and len(c.got) == down.datagrams_out)


def send(c: Client, n: int, *, first: int = 0, batch: int = 20) -> Iterator[Awaitable[None]]:
    """Send datagrams ``first`` .. ``first + n - 1`` (their numbers), in small batches so no
    socket queue overflows."""
    for i in range(first, first + n):
        c.send(b"%05d" % i)
        if i % batch == batch - 1:
            yield asyncio.sleep(0.005)


async def pump(c: Client, n: int, r: Relay, echo: Echo, *, first: int = 0) -> None:
    """Send ``n`` numbered datagrams (after ``first`` sent before) and wait until the relay
    has settled all of them."""
    for pause in send(c, n, first=first):
        await pause
    await until(lambda: settled(r, echo, c, first + n), f"{n} datagrams settled: {r.stats()}")


def predicted(r: Relay, direction: str, n: int, t: float = 0.0) -> list[Decision]:
    """The first ``n`` decisions of ``direction`` for a relay configured like ``r`` (seed and
    faults), from a twin that never runs."""
    twin = Relay(r.listen, r.upstream, up=r.faults[UP], down=r.faults[DOWN], seed=r.seed)
    return [twin.links[direction].decide(t) for _ in range(n)]


def relay(echo: Echo, **kw) -> Relay:
    kw.setdefault("duration", 20)
    return Relay((LO, 0), echo.address, **kw)


# -- the fault process, without sockets -----------------------------------------------------


def decisions(faults: Faults, seed: int, n: int, t: float = 1.0):
    link = FaultLink(faults, random.Random(seed))
    return [link.decide(t) for _ in range(n)]


def test_loss_rate_within_bounds():
    ds = decisions(Faults(loss=0.2), 1, 20000)
    lost = sum(d.verdict == "loss" for d in ds)
    assert 0.19 < lost / len(ds) < 0.21


def test_duplication_and_reorder_rates_within_bounds():
    ds = decisions(Faults(dup=0.1, reorder=0.3), 2, 20000)
    assert all(d.verdict == "pass" for d in ds)
    dup = sum(len(d.delays) == 2 for d in ds) / len(ds)
    held = sum(d.hold for d in ds) / len(ds)
    assert 0.09 < dup < 0.11
    assert 0.29 < held < 0.31


def test_delay_and_jitter_stay_in_their_band():
    ds = decisions(Faults(delay=0.05, jitter=0.02, dup=0.5), 3, 5000)
    delays = [x for d in ds for x in d.delays]
    assert min(delays) >= 0.03 and max(delays) <= 0.07
    assert min(delays) < 0.032 and max(delays) > 0.068  # the whole band is used
    assert abs(sum(delays) / len(delays) - 0.05) < 0.002
    # jitter larger than the delay never schedules into the past
    assert min(x for d in decisions(Faults(delay=0.01, jitter=0.05), 3, 1000) for x in d.delays) == 0.0


def test_gilbert_elliott_bursts():
    p_gb, p_bg = 0.02, 0.25
    ds = decisions(Faults(burst=Burst(p_gb, p_bg, 1.0)), 4, 50000)
    lost = [d.verdict == "burst" for d in ds]
    assert not any(d.verdict == "loss" for d in ds)  # good state has no loss here
    stationary = p_gb / (p_gb + p_bg)  # share of datagrams sent in the bad state
    assert abs(sum(lost) / len(lost) - stationary) < 0.01
    runs, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert abs(sum(runs) / len(runs) - 1 / p_bg) < 0.3  # mean burst length 1/p(bad->good)
    assert max(runs) >= 12  # losses really come in bursts, unlike independent loss at ~7 %


def test_outage_drops_only_inside_its_window():
    link = FaultLink(Faults(outages=((2.0, 1.5),)), random.Random(0))
    assert [link.decide(t).verdict for t in (0.0, 1.99, 2.0, 3.0, 3.49, 3.5, 9.0)] == [
        "pass", "pass", "outage", "outage", "outage", "pass", "pass"]


def test_same_seed_same_decisions_different_seed_differs():
    f = Faults(loss=0.2, dup=0.1, reorder=0.1, delay=0.01, jitter=0.005, burst=Burst(0.05, 0.3, 0.8))
    assert decisions(f, 7, 2000) == decisions(f, 7, 2000)
    assert decisions(f, 7, 2000) != decisions(f, 8, 2000)


def test_outage_and_faults_consume_the_same_draws():
    """Decisions after an outage do not depend on how many datagrams the outage swallowed at
    which time: each datagram draws the same amount of randomness."""
    f = Faults(loss=0.3, outages=((1.0, 1.0),))
    a = FaultLink(f, random.Random(5))
    b = FaultLink(Faults(loss=0.3), random.Random(5))
    for _ in range(50):
        a.decide(1.5)  # inside the outage
        b.decide(0.0)
    assert [a.decide(3.0) for _ in range(200)] == [b.decide(3.0) for _ in range(200)]


@pytest.mark.parametrize("bad", [
    dict(loss=1.5), dict(dup=-0.1), dict(reorder=2), dict(delay=-1), dict(jitter=float("inf")),
    dict(outages=((1.0, 0.0),)), dict(outages=((-1.0, 1.0),)),
])
def test_bad_faults_are_refused(bad):
    with pytest.raises(ValueError):
        Faults(**bad)


def test_bad_burst_is_refused():
    with pytest.raises(ValueError):
        Burst(0.1, 1.2, 1.0)


# -- through real sockets --------------------------------------------------------------------


async def test_clean_relay_forwards_everything_both_ways(echo):
    async with relay(echo) as r:
        c = await client_for(r)
        await pump(c, 200, r, echo)
        assert sorted(c.payloads) == [b"%05d" % i for i in range(200)]
        s = r.stats()
        assert s["up"]["datagrams_in"] == s["up"]["datagrams_out"] == 200
        assert s["down"]["datagrams_out"] == 200 and s["up"]["dropped"] == 0
        assert s["up"]["bytes_out"] == 1000
        assert len({addr for _, addr in echo.seen}) == 1  # one NAT mapping per client


async def test_loss_uplink_only(echo):
    async with relay(echo, up=Faults(loss=0.25), seed=3) as r:
        c = await client_for(r)
        await pump(c, 400, r, echo)
        up, down = r.counters[UP], r.counters[DOWN]
        passed = [i for i, d in enumerate(predicted(r, UP, 400)) if d.verdict == "pass"]
        assert up.datagrams_in == 400
        assert up.lost == up.dropped == 400 - up.datagrams_out == 400 - len(passed)
        assert 0.18 < up.lost / 400 < 0.32
        assert sorted(int(p) for p in c.payloads) == passed
        assert down.dropped == 0 and len(c.got) == up.datagrams_out == len(echo.seen)


async def test_loss_both_ways(echo):
    async with relay(echo, up=Faults(loss=0.2), down=Faults(loss=0.2), seed=4) as r:
        c = await client_for(r)
        await pump(c, 400, r, echo)
        up = [i for i, d in enumerate(predicted(r, UP, 400)) if d.verdict == "pass"]
        down = predicted(r, DOWN, len(up))  # the echoes come in the order they went up
        both = [i for i, d in zip(up, down) if d.verdict == "pass"]
        assert sorted(int(p) for p in c.payloads) == both
        assert 0.5 < len(both) / 400 < 0.78  # 0.8 * 0.8 = 0.64


async def test_duplication(echo):
    async with relay(echo, up=Faults(dup=0.5), seed=5) as r:
        c = await client_for(r)
        await pump(c, 200, r, echo)
        dups = r.counters[UP].duplicated
        assert dups == sum(len(d.delays) == 2 for d in predicted(r, UP, 200))
        assert 70 < dups < 130
        assert len(echo.seen) == 200 + dups == len(c.got)
        assert set(c.payloads) == {b"%05d" % i for i in range(200)}


async def test_reordering_swaps_but_delivers_everything(echo):
    # held ones wait for the next datagram that passes (the last one passes: a timer would
    # release it too, but later than this test wants to wait)
    async with relay(echo, up=Faults(reorder=0.2, reorder_hold=5.0), seed=6) as r:
        c = await client_for(r)
        held = [d.hold for d in predicted(r, UP, 200)]
        assert not held[-1]
        await pump(c, 200, r, echo)
        got = [int(p) for p in c.payloads]
        assert sorted(got) == list(range(200))
        assert r.counters[UP].reordered == sum(held) > 20
        # each datagram that passed went out before the ones held ahead of it
        first_held = held.index(True)
        passer = held.index(False, first_held)
        assert got.index(passer) < got.index(first_held)


async def test_reorder_hold_releases_a_lonely_datagram(echo):
    async with relay(echo, up=Faults(reorder=1.0, reorder_hold=0.15), seed=7) as r:
        c = await client_for(r)
        t0 = time.monotonic()
        c.send(b"alone")
        await asyncio.wait_for(c.arrived.wait(), 2)
        assert c.payloads == [b"alone"] and r.counters[UP].reordered == 1
        assert c.got[0][0] - t0 >= 0.15 - 1e-6  # held, then released (timers never fire early)


async def test_delay_and_jitter_set_the_round_trip(echo):
    async with relay(echo, up=Faults(delay=0.05, jitter=0.02), down=Faults(delay=0.05), seed=8) as r:
        c = await client_for(r)
        ups = [d.delays[0] for d in predicted(r, UP, 10)]
        assert max(ups) - min(ups) > 0.02 and 0.03 <= min(ups) and max(ups) <= 0.07  # jitter
        rtts = []
        for i in range(10):
            c.arrived.clear()
            t0 = time.monotonic()
            c.send(b"%d" % i)
            await asyncio.wait_for(c.arrived.wait(), 2)
            rtts.append(c.got[-1][0] - t0)
        # each datagram waited its own drawn delay both ways: a lower bound (the loop's timers
        # never fire early), which load cannot break; how much later is the benchmarks' business
        assert all(rtt >= up + 0.05 - 1e-6 for rtt, up in zip(rtts, ups)), (rtts, ups)


async def test_bursts_through_the_relay(echo):
    async with relay(echo, down=Faults(burst=Burst(0.05, 0.2, 1.0)), seed=9) as r:
        c = await client_for(r)
        await pump(c, 400, r, echo)
        got = {int(p) for p in c.payloads}
        lost = [i not in got for i in range(400)]
        assert lost == [d.verdict == "burst" for d in predicted(r, DOWN, 400)]
        assert r.counters[DOWN].burst_lost == lost.count(True) > 0
        longest = run = 0
        for x in lost:
            run = run + 1 if x else 0
            longest = max(longest, run)
        assert longest >= 5


async def test_same_seed_same_datagrams_survive(echo):
    survivors = []
    for _ in range(2):
        async with relay(echo, up=Faults(loss=0.3, dup=0.1), down=Faults(loss=0.3), seed=11) as r:
            c = await client_for(r)
            await pump(c, 150, r, echo)
            survivors.append(sorted(c.payloads))
            echo.seen.clear()
    async with relay(echo, up=Faults(loss=0.3, dup=0.1), down=Faults(loss=0.3), seed=12) as r:
        c = await client_for(r)
        await pump(c, 150, r, echo)
        other = sorted(c.payloads)
    assert survivors[0] == survivors[1]
    assert other != survivors[0]


async def test_rebind_changes_the_source_port_the_gateway_sees(echo):
    async with relay(echo) as r:
        c = await client_for(r)
        c.send(b"a")
        await asyncio.wait_for(c.arrived.wait(), 2)
        r.rebind()
        c.arrived.clear()
        c.send(b"b")
        await asyncio.wait_for(c.arrived.wait(), 2)
        assert len(echo.ports) == 2 and echo.ports[0] != echo.ports[1]
        client_addr = next(iter(r.clients))
        assert r.upstream_ports(client_addr) == echo.ports
        assert c.payloads == [b"a", b"b"]  # answers to the new port reach the device
        # An answer sent to the retired mapping is dropped, as a real NAT would.
        assert echo.transport is not None
        echo.transport.sendto(b"late", echo.seen[0][1])
        await until(lambda: r.counters[DOWN].stale_dropped == 1, "the late answer dropped")
        assert c.payloads == [b"a", b"b"]


async def test_rebind_every_and_at(echo):
    """Rebinds at 0.05 s, then every 0.2 s (event-loop timers): exchanges go on until the
    gateway side has seen four source ports. An answer that races a rebind goes to the retired
    mapping and is dropped, so each datagram is sent again until its answer comes."""
    async with relay(echo, rebind_every=0.2, rebind_at=(0.05,)) as r:
        c = await client_for(r)
        for i in range(1000):  # bounded: about 0.5 s of exchanges
            if len(echo.ports) >= 4:
                break
            for _ in range(10):
                c.send(b"%d" % i)
                if await answered(c, b"%d" % i, 0.3):
                    break
            await asyncio.sleep(0.002)
        assert r.rebinds >= 3 and len(echo.ports) == len(set(echo.ports)) == 4
        ports = iter(r.upstream_ports(next(iter(r.clients))))
        assert all(p in ports for p in echo.ports)  # mappings of this client, in order
        assert set(c.payloads) == {b"%d" % k for k in range(i)}  # each send came back


async def test_outage_drops_everything_in_its_window(echo):
    """Datagram i arrives at relay time 0.05 i (the clock is set, then the datagram sent and
    answered): the uplink is out for [0.3, 0.6), the downlink for [0.7, 0.9)."""
    clock = Clock(0.0)
    async with relay(echo, up=Faults(outages=((0.3, 0.3),)), down=Faults(outages=((0.7, 0.2),)),
                     clock=clock) as r:
        c = await client_for(r)
        for i in range(20):
            clock.t = 0.05 * i
            c.send(b"%05d" % i)
            await until(lambda: settled(r, echo, c, i + 1), f"datagram {i} settled: {r.stats()}")
        up_out, down_out = set(range(6, 12)), set(range(14, 18))
        assert {int(d) for d, _ in echo.seen} == set(range(20)) - up_out
        assert sorted(int(p) for p in c.payloads) == sorted(set(range(20)) - up_out - down_out)
        assert r.counters[UP].outage_dropped == r.counters[UP].dropped == 6
        assert r.counters[DOWN].outage_dropped == r.counters[DOWN].dropped == 4


async def test_cut_starts_an_outage_now(echo):
    clock = Clock(100.0)
    async with relay(echo, clock=clock) as r:
        c = await client_for(r)
        up, down = r.counters[UP], r.counters[DOWN]
        c.send(b"1")
        await until(lambda: c.payloads == [b"1"], "the first answer")
        clock.t += 10  # now the relay's clock says 10 s
        r.cut(0.3)
        c.send(b"2")
        await until(lambda: up.datagrams_in == 2, "2 read")
        clock.t += 0.29
        assert echo.transport is not None
        echo.transport.sendto(b"3", echo.seen[0][1])  # the downlink is cut too
        await until(lambda: down.datagrams_in == 2, "3 read")
        clock.t += 0.01  # the cut is over
        c.send(b"4")
        await until(lambda: len(c.got) == 2, "4 answered")
        assert c.payloads == [b"1", b"4"]
        assert up.outage_dropped == up.dropped == 1 and down.outage_dropped == down.dropped == 1
        with pytest.raises(ValueError):
            r.cut(0)


def test_rebinds_take_no_injected_clock(echo):
    with pytest.raises(ValueError, match="clock"):
        relay(echo, clock=Clock(), rebind_at=(1.0,))


async def test_on_bytes_fires_once_right_after_the_threshold(echo):
    async with relay(echo) as r:
        seen: list[int] = []
        r.on_bytes(DOWN, 50, lambda: seen.append(r.counters[DOWN].bytes_out))
        c = await client_for(r)
        await pump(c, 15, r, echo)  # 5 bytes each
        assert seen == [50]
        r.on_bytes(UP, 100, lambda: r.cut(5))
        await pump(c, 15, r, echo, first=15)
        assert r.counters[UP].datagrams_out == 20 and r.counters[UP].outage_dropped == 10
        with pytest.raises(ValueError):
            r.on_bytes("sideways", 1, lambda: None)


async def test_duration_bounds_the_run(echo):
    r = relay(echo, duration=0.3)
    await r.start()
    c = await client_for(r)
    c.send(b"before")
    await asyncio.wait_for(c.arrived.wait(), 2)
    await asyncio.wait_for(r.wait_closed(), 2)  # it closed by itself
    c.send(b"after")
    await asyncio.sleep(0.1)
    assert c.payloads == [b"before"] and len(echo.seen) == 1
    await r.close()


async def test_close_cancels_datagrams_in_flight(echo):
    async with relay(echo, up=Faults(delay=0.5)) as r:
        c = await client_for(r)
        c.send(b"x")
        await until(lambda: r.counters[UP].datagrams_in == 1, "x read")
    await asyncio.sleep(0.6)  # past its delay: it would have arrived by now
    assert echo.seen == [] and r.closed and r.counters[UP].datagrams_out == 0


async def test_ipv6_loopback():
    """Devices reach gateways over IPv6 too: a machine without ::1 fails here, loudly."""
    loop = asyncio.get_running_loop()
    t, e = await loop.create_datagram_endpoint(Echo, local_addr=("::1", 0))
    try:
        async with Relay(("::1", 0), t.get_extra_info("sockname")[:2], duration=5, seed=1) as r:
            c = await client_for(r)
            c.send(b"six")
            await asyncio.wait_for(c.arrived.wait(), 2)
            assert c.payloads == [b"six"]
    finally:
        t.close()


# -- command line ----------------------------------------------------------------------------


def test_cli_options_map_to_faults_per_direction():
    args = build_parser().parse_args([
        "--listen", "127.0.0.1:0", "--upstream", "[::1]:5683", "--loss", "0.2", "--down-loss",
        "0.05", "--dup", "0.1", "--reorder", "0.1", "--delay-ms", "150", "--jitter-ms", "20",
        "--burst", "0.01,0.3,0.9", "--outage", "5,3", "--up-outage", "1,1", "--up-outage", "9,1",
    ])
    assert args.upstream == ("::1", 5683)
    up, down = faults_from_args(args, UP), faults_from_args(args, DOWN)
    assert (up.loss, down.loss) == (0.2, 0.05)
    assert up.dup == down.dup == 0.1 and up.delay == down.delay == 0.15 and down.jitter == 0.02
    assert up.burst == down.burst == Burst(0.01, 0.3, 0.9)
    assert up.outages == ((1.0, 1.0), (9.0, 1.0)) and down.outages == ((5.0, 3.0),)


@pytest.mark.parametrize("bad", [
    ["--loss", "1.5"], ["--burst", "0.1,0.2"], ["--outage", "x,1"], ["--delay-ms", "-3"],
    ["--listen", "nohost"], ["--rebind-every", "0"],
])
def test_cli_refuses_bad_options(bad, capsys):
    base = {"--listen": "127.0.0.1:0", "--upstream": "127.0.0.1:9"}
    for i in range(0, len(bad), 2):
        base[bad[i]] = bad[i + 1]
    argv = [x for kv in base.items() for x in kv] + ["--duration", "1"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "error" in capsys.readouterr().err


async def test_cli_runs_until_stopped_and_prints_counters(echo):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LO, 0))
        port = probe.getsockname()[1]  # a free port for the relay to take right after
    argv = ["--listen", f"{LO}:{port}", "--upstream", f"{LO}:{echo.address[1]}", "--up-loss",
            "0.5", "--seed", "2", "--duration", "60", "--json"]
    args = build_parser().parse_args(argv)
    twin = Relay(args.listen, args.upstream, up=faults_from_args(args, UP), seed=args.seed)
    passes = [twin.links[UP].decide(0.0).verdict == "pass" for _ in range(150)]
    # after the 100 numbered datagrams, as many more as it takes for one to pass: its answer
    # comes after every other answer (one socket each way, in order)
    total = passes.index(True, 100) + 1
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.relay", *argv,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    await asyncio.wait_for(proc.stderr.readline(), 10)  # the banner: it is listening
    loop = asyncio.get_running_loop()
    _, c = await loop.create_datagram_endpoint(Client, remote_addr=(LO, port))
    for pause in send(c, total):
        await pause
    await until(lambda: b"%05d" % (total - 1) in c.payloads, "the last datagram's answer")
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    stats = json.loads(out)
    assert stats["up"]["datagrams_in"] == total
    assert stats["up"]["lost"] == passes[:total].count(False) and stats["down"]["dropped"] == 0
    assert 30 < passes[:100].count(False) < 70
    assert sorted(int(p) for p in c.payloads) == [i for i in range(total) if passes[i]]
    assert len(c.got) == stats["down"]["datagrams_out"] == len(echo.seen)
