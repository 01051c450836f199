"""A fault-injecting UDP relay: a lossy, duplicating, reordering, slow, NAT-rebinding link that
tests and benchmarks (and operators) put in front of a real gateway.

Devices talk to the relay's listen address; the relay forwards each client's datagrams to the
upstream (the gateway) from a socket of its own per client, like a NAT, and the answers back.
Faults apply per direction (``up``: device -> gateway, ``down``: gateway -> device).

Deterministic for a given seed: each direction owns one ``random.Random`` and draws the same
number of values for every datagram, so the same seed and the same datagram sequence give the
same decisions whatever the timing. Only outages and rebinding depend on the clock, by design;
the clock outages and cuts read can be injected (``clock=``), so tests set the time instead of
sleeping into a window.

The fault decisions live in :class:`FaultLink` (no I/O, fed with time); :class:`Relay` is the
thin asyncio adapter around real sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from proto.version import version_line

Address = tuple[Any, ...]  # (host, port) or the 4-tuple of IPv6

UP, DOWN = "up", "down"
MAX_DATAGRAM = 65535
RCVBUF = 1 << 20  # bytes asked for the listen socket (the kernel may cap it at rmem_max)
READ_BATCH = 64  # datagrams read per readiness callback: keeps one busy socket from starving
OLD_MAPPINGS = 4  # stale upstream sockets kept open per client (a real NAT drops silently)
REORDER_NUDGE = 1e-4  # s: a released datagram goes out strictly after the one that passed it


def _probability(name: str, p: float) -> None:
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


@dataclass(frozen=True)
class Burst:
    """Gilbert-Elliott two-state channel: per datagram the link moves good->bad with ``p_gb``
    and bad->good with ``p_bg``; in the bad state a datagram is lost with ``loss_bad`` (in the
    good state with the direction's plain ``loss``). Mean burst length is 1 / p_bg datagrams."""

    p_gb: float
    p_bg: float
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        _probability("burst p(good->bad)", self.p_gb)
        _probability("burst p(bad->good)", self.p_bg)
        _probability("burst loss in bad state", self.loss_bad)


@dataclass(frozen=True)
class Faults:
    """What one direction of the link does to datagrams. Times in seconds; ``delay`` is one way
    (so a symmetric link has RTT = 2 x delay); ``outages`` are (start, duration) pairs counted
    from the relay's start, during which every datagram in this direction is dropped."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    reorder_hold: float = 0.2  # s a held-back datagram waits for the next one at most
    delay: float = 0.0
    jitter: float = 0.0
    burst: Burst | None = None
    outages: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        _probability("loss", self.loss)
        _probability("dup", self.dup)
        _probability("reorder", self.reorder)
        for name in ("reorder_hold", "delay", "jitter"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {v!r}")
        for o in self.outages:
            if len(o) != 2 or o[0] < 0 or o[1] <= 0:
                raise ValueError(f"outage must be (start >= 0, duration > 0), got {o!r}")
        object.__setattr__(self, "outages", tuple((float(a), float(b)) for a, b in self.outages))

    def in_outage(self, t: float) -> bool:
        return any(start <= t < start + length for start, length in self.outages)


class Decision(NamedTuple):
    """The fate of one datagram: dropped (``verdict`` names why) or sent once per entry of
    ``delays`` (two entries: duplicated), possibly held back first (``hold``: reordered)."""

    verdict: str  # "pass", "loss", "burst", "outage"
    delays: tuple[float, ...]
    hold: bool


DRAWS = 6  # random values consumed per datagram, whatever the outcome


class FaultLink:
    """One direction's fault process, without I/O: ``decide(t)`` for each datagram in order."""

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.faults = faults
        self.rng = rng
        self.bad = False  # Gilbert-Elliott state

    def decide(self, t: float) -> Decision:
        f, r = self.faults, self.rng
        u_state, u_loss, u_dup, u_hold, u_j1, u_j2 = (r.random() for _ in range(DRAWS))
        if f.burst is not None:
            self.bad = (u_state >= f.burst.p_bg) if self.bad else (u_state < f.burst.p_gb)
        if f.in_outage(t):
            return Decision("outage", (), False)
        p_loss = f.burst.loss_bad if (f.burst is not None and self.bad) else f.loss
        if u_loss < p_loss:
            return Decision("burst" if self.bad else "loss", (), False)
        draws = (u_j1, u_j2) if u_dup < f.dup else (u_j1,)
        delays = tuple(max(0.0, f.delay + (2.0 * u - 1.0) * f.jitter) for u in draws)
        return Decision("pass", delays, u_hold < f.reorder)


@dataclass
class Counters:
    """Per-direction traffic counters. ``dropped`` is the sum of the reasons after it."""

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    dropped: int = 0
    bytes_dropped: int = 0
    lost: int = 0  # independent random loss
    burst_lost: int = 0  # lost in the Gilbert-Elliott bad state
    outage_dropped: int = 0
    stale_dropped: int = 0  # downlink to a NAT mapping that rebinding retired
    error_dropped: int = 0  # send failed (upstream unreachable, buffer full), client cap
    duplicated: int = 0
    reordered: int = 0

    def drop(self, reason: str, size: int) -> None:
        self.dropped += 1
        self.bytes_dropped += size
        setattr(self, reason, getattr(self, reason) + 1)


_REASON = {"loss": "lost", "burst": "burst_lost", "outage": "outage_dropped"}


class _Mapping:
    """One client's NAT mapping: the upstream socket the gateway sees it from."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]


class _Client:
    def __init__(self, addr: Address) -> None:
        self.addr = addr
        self.mapping: _Mapping | None = None
        self.old: list[_Mapping] = []
        self.ports: list[int] = []  # every upstream source port this client has had, in order


class _Held:
    """A datagram held back for reordering, with the delays it still has to travel."""

    __slots__ = ("data", "client", "delays", "timer")

    def __init__(self, data: bytes, client: _Client, delays: tuple[float, ...]) -> None:
        self.data = data
        self.client = client
        self.delays = delays
        self.timer: asyncio.TimerHandle | None = None


def _resolve(addr: Address) -> tuple[int, Address]:
    host, port = addr[0], addr[1]
    info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = info[0]
    return family, sockaddr


class Relay:
    """The fault-injecting relay. Use as ``async with Relay(...) as r:`` (``r.address`` is the
    bound listen address), or ``await start()`` / ``await close()``. With ``duration`` it closes
    itself after that many seconds; ``await r.wait_closed()`` waits for it.

    ``clock`` (seconds, default the event loop's) is what outages and :meth:`cut` are judged
    by. Rebinds wait on the event loop's timers, so they take only the default clock; delays,
    reorder holds and ``duration`` are event-loop seconds whatever the clock."""

    def __init__(
        self,
        listen: Address,
        upstream: Address,
        *,
        up: Faults | None = None,
        down: Faults | None = None,
        seed: int = 0,
        rebind_every: float | None = None,
        rebind_at: Sequence[float] = (),
        duration: float | None = None,
        max_clients: int = 1024,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if rebind_every is not None and not rebind_every > 0:
            raise ValueError("rebind_every must be > 0 seconds")
        if duration is not None and not duration > 0:
            raise ValueError("duration must be > 0 seconds")
        if any(t < 0 for t in rebind_at):
            raise ValueError("rebind times must be >= 0")
        if clock is not None and (rebind_every is not None or rebind_at):
            raise ValueError("rebinds run on the event loop's clock: no clock= with them")
        self._clock = clock
        self.listen = listen
        self.upstream = upstream
        self.faults = {UP: up or Faults(), DOWN: down or Faults()}
        self.seed = seed
        # String seeds are hashed with SHA-512 by random.seed: stable across runs and versions.
        self.links = {d: FaultLink(self.faults[d], random.Random(f"{seed}/{d}")) for d in (UP, DOWN)}
        self.counters = {UP: Counters(), DOWN: Counters()}
        self.rebind_every = rebind_every
        self.rebind_at = sorted(rebind_at)
        self.rebinds = 0
        self._triggers: list[tuple[str, int, Callable[[], None]]] = []
        self._cut_until = -1.0  # relay clock: cut() drops everything both ways until then
        self.duration = duration
        self.max_clients = max_clients
        self.clients: dict[Address, _Client] = {}
        self._held: dict[str, list[_Held]] = {UP: [], DOWN: []}
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sock: socket.socket | None = None
        self._up_family = 0
        self._up_addr: Address = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._closed = asyncio.Event()
        self.address: Address = ()
        self.tap: Callable[[str, bytes], None] | None = None  # (direction, datagram) as it arrives

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Relay:
        self._loop = asyncio.get_running_loop()
        family, laddr = _resolve(self.listen)
        self._up_family, self._up_addr = _resolve(self.upstream)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Every device shares this socket: a deeper queue loses less to bursts of clients.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind(laddr)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.address = sock.getsockname()
        self._t0 = (self._clock or self._loop.time)()
        self._loop.add_reader(sock.fileno(), self._read_listen)
        if self.rebind_every is not None or self.rebind_at:
            self._tasks.append(asyncio.create_task(self._rebinder()))
        if self.duration is not None:
            self._timers.add(self._loop.call_later(self.duration, self._close_now))
        return self

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def elapsed(self) -> float:
        """Seconds since start: the clock outages and ``rebind_at`` are written against."""
        assert self._loop is not None, "relay not started"
        return (self._clock or self._loop.time)() - self._t0

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._close_now()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _close_now(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for h in self._timers:
            h.cancel()
        self._timers.clear()
        for d in (UP, DOWN):
            for h in self._held[d]:
                if h.timer is not None:
                    h.timer.cancel()
            self._held[d].clear()
        assert self._loop is not None
        for c in self.clients.values():
            for m in ([c.mapping] if c.mapping else []) + c.old:
                self._drop_mapping(m)
            c.mapping, c.old = None, []
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()

    # -- NAT mappings ----------------------------------------------------------------------

    def _new_mapping(self, client: _Client) -> _Mapping:
        assert self._loop is not None
        s = socket.socket(self._up_family, socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.bind(("::", 0) if self._up_family == socket.AF_INET6 else ("0.0.0.0", 0))
            s.connect(self._up_addr)  # a connected socket hears only the gateway, like a NAT
        except OSError:
            s.close()
            raise
        m = _Mapping(s)
        self._loop.add_reader(s.fileno(), self._read_upstream, client, m)
        client.ports.append(m.port)
        return m

    def _drop_mapping(self, m: _Mapping) -> None:
        assert self._loop is not None
        self._loop.remove_reader(m.sock.fileno())
        m.sock.close()

    def rebind(self) -> None:
        """Change every client's NAT mapping now: the gateway sees new source ports. Answers
        to the old ports are dropped (counted as ``stale_dropped``), as a real NAT would."""
        if self.closed:
            return
        self.rebinds += 1
        for c in self.clients.values():
            if c.mapping is not None:
                c.old.append(c.mapping)
                while len(c.old) > OLD_MAPPINGS:
                    self._drop_mapping(c.old.pop(0))
            c.mapping = self._new_mapping(c)

    async def _rebinder(self) -> None:
        pending = list(self.rebind_at)
        next_periodic = self.rebind_every
        while not self.closed:
            candidates = pending[:1] + ([next_periodic] if next_periodic is not None else [])
            if not candidates:
                return
            when = min(candidates)
            await asyncio.sleep(max(0.0, when - self.elapsed()))
            if pending and pending[0] <= when:
                pending.pop(0)
            if next_periodic is not None and next_periodic <= when:
                next_periodic += self.rebind_every or 0.0
            self.rebind()

    def cut(self, duration: float) -> None:
        """Start an outage now, both ways, for ``duration`` seconds (tests cut a transfer in
        the middle without knowing in advance when the middle is)."""
        if not duration > 0:
            raise ValueError("outage duration must be > 0 seconds")
        self._cut_until = max(self._cut_until, self.elapsed() + duration)

    def on_bytes(self, direction: str, threshold: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, right after the datagram that brings ``direction``'s
        bytes_out to ``threshold`` or more has been sent: a fault lands mid-transfer however
        fast the transfer runs (loopback moves a small image in milliseconds)."""
        if direction not in (UP, DOWN):
            raise ValueError(f"direction must be {UP!r} or {DOWN!r}")
        self._triggers.append((direction, threshold, callback))

    def upstream_ports(self, client: Address) -> list[int]:
        """Source ports the gateway has seen for ``client`` (the last one is current)."""
        c = self.clients.get(tuple(client))
        return list(c.ports) if c else []

    # -- datagram path ---------------------------------------------------------------------

    def _read_listen(self) -> None:
        assert self._sock is not None
        for _ in range(READ_BATCH):
            try:
                data, addr = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP error queued on the socket: nothing to forward
                continue
            client = self.clients.get(addr)
            if client is None:
                if len(self.clients) >= self.max_clients:
                    c = self.counters[UP]
                    c.datagrams_in += 1
                    c.bytes_in += len(data)
                    c.drop("error_dropped", len(data))
                    continue
                client = _Client(addr)
                client.mapping = self._new_mapping(client)
                self.clients[addr] = client
            self._ingress(UP, data, client)
            if self._sock is None:
                return

    def _read_upstream(self, client: _Client, m: _Mapping) -> None:
        for _ in range(READ_BATCH):
            try:
                data = m.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable: the gateway is down; the device retries
                continue
            if m is not client.mapping:
                c = self.counters[DOWN]
                c.datagrams_in += 1
                c.bytes_in += len(data)
                c.drop("stale_dropped", len(data))
                continue
            self._ingress(DOWN, data, client)
            if client.mapping is None:
                return

    def _ingress(self, d: str, data: bytes, client: _Client) -> None:
        if self.tap is not None:
            self.tap(d, data)
        c = self.counters[d]
        c.datagrams_in += 1
        c.bytes_in += len(data)
        t = self.elapsed()
        dec = self.links[d].decide(t)  # drawn even during a cut: later decisions stay the same
        if t < self._cut_until:
            dec = Decision("outage", (), False)
        if dec.verdict != "pass":
            c.drop(_REASON[dec.verdict], len(data))
            return
        if len(dec.delays) > 1:
            c.duplicated += 1
        if dec.hold:
            assert self._loop is not None
            c.reordered += 1
            held = _Held(data, client, dec.delays)
            held.timer = self._loop.call_later(self.faults[d].reorder_hold, self._release_one, d, held)
            self._held[d].append(held)
            return
        self._schedule(d, data, client, dec.delays, 0.0)
        self._release_all(d)

    def _release_all(self, d: str) -> None:
        """The datagram that just passed goes first; everything held back follows it."""
        held, self._held[d] = self._held[d], []
        for h in held:
            if h.timer is not None:
                h.timer.cancel()
            self._schedule(d, h.data, h.client, h.delays, REORDER_NUDGE)

    def _release_one(self, d: str, held: _Held) -> None:
        """Nothing came along within ``reorder_hold``: the held datagram goes out late."""
        self._held[d] = [h for h in self._held[d] if h is not held]
        self._schedule(d, held.data, held.client, held.delays, 0.0)

    def _schedule(self, d: str, data: bytes, client: _Client, delays: Sequence[float], nudge: float) -> None:
        assert self._loop is not None
        for delay in delays:
            if delay <= 0 and nudge <= 0:
                self._emit(d, data, client, None)
            else:
                h: list[asyncio.TimerHandle] = []
                h.append(self._loop.call_later(delay + nudge, self._emit, d, data, client, h))
                self._timers.add(h[0])

    def _emit(self, d: str, data: bytes, client: _Client, handle: list[asyncio.TimerHandle] | None) -> None:
        if handle:
            self._timers.discard(handle[0])
        if self.closed:
            return
        c = self.counters[d]
        try:
            if d == UP:
                if client.mapping is None:
                    raise OSError("client mapping gone")
                client.mapping.sock.send(data)
            else:
                assert self._sock is not None
                self._sock.sendto(data, client.addr)
        except OSError:  # full buffer or the gateway's port unreachable: a real link loses it
            c.drop("error_dropped", len(data))
            return
        c.datagrams_out += 1
        c.bytes_out += len(data)
        if self._triggers:
            due = [t for t in self._triggers if t[0] == d and c.bytes_out >= t[1]]
            if due:
                self._triggers = [t for t in self._triggers if t not in due]
                for _, _, callback in due:
                    callback()

    # -- reporting -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "up": asdict(self.counters[UP]),
            "down": asdict(self.counters[DOWN]),
            "clients": len(self.clients),
            "rebinds": self.rebinds,
            "elapsed": round(self.elapsed(), 3) if self._loop else 0.0,
        }

    def format_stats(self) -> str:
        """A small fixed-width table: one row per counter, a column per direction."""
        up, down = asdict(self.counters[UP]), asdict(self.counters[DOWN])
        w = max(len(k) for k in up)
        lines = [f"{'':<{w}}  {'up':>12}  {'down':>12}"]
        lines += [f"{k:<{w}}  {up[k]:>12}  {down[k]:>12}" for k in up]
        lines.append(f"clients {len(self.clients)}, rebinds {self.rebinds}, "
                     f"elapsed {self.elapsed() if self._loop else 0.0:.1f} s")
        return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------


def parse_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or [V6]:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _floats(n: int, what: str) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        parts = text.split(",")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return values
    return parse


def _prob(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return p


def _nonneg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


_FAULT_OPTS = (  # (option, type, metavar, help): each has --X (both ways), --up-X and --down-X
    ("loss", _prob, "P", "independent loss probability per datagram"),
    ("dup", _prob, "P", "probability a datagram is sent twice"),
    ("reorder", _prob, "P", "probability a datagram is held back until the next one passes"),
    ("reorder-hold-ms", _nonneg, "MS", "longest a held-back datagram waits (default 200)"),
    ("delay-ms", _nonneg, "MS", "one-way delay (RTT is twice this when both ways have it)"),
    ("jitter-ms", _nonneg, "MS", "uniform +/- jitter around the delay"),
    ("burst", _floats(3, "P_GB,P_BG,LOSS_BAD"), "P_GB,P_BG,LOSS_BAD",
     "Gilbert-Elliott bursts: p(good->bad), p(bad->good), loss in the bad state"),
    ("outage", _floats(2, "START,DURATION"), "START,DURATION",
     "drop everything from START s for DURATION s (repeatable)"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fota-relay",
        description="Fault-injecting UDP relay: put a lossy link in front of a gateway. "
                    "Every fault option X also exists as --up-X (device->gateway) and "
                    "--down-X (gateway->device); those override --X for their direction.",
    )
    p.add_argument("--listen", type=parse_hostport, required=True, metavar="HOST:PORT",
                   help="where devices send (e.g. 127.0.0.1:6000)")
    p.add_argument("--upstream", type=parse_hostport, required=True, metavar="HOST:PORT",
                   help="the gateway's device address (e.g. 127.0.0.1:5683)")
    for name, typ, metavar, help_ in _FAULT_OPTS:
        action = "append" if name == "outage" else "store"
        p.add_argument(f"--{name}", type=typ, metavar=metavar, help=help_, action=action)
        for d in (UP, DOWN):
            p.add_argument(f"--{d}-{name}", type=typ, metavar=metavar, action=action,
                           help=argparse.SUPPRESS)
    p.add_argument("--rebind-every", type=float, metavar="S",
                   help="change the NAT mapping (upstream source port) every S seconds")
    p.add_argument("--rebind-at", type=float, action="append", default=[], metavar="T",
                   help="change the NAT mapping at T seconds after start (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="print the counters at exit as JSON")
    p.add_argument("--version", action="version", version=version_line("fota-relay"))
    return p


def faults_from_args(args: argparse.Namespace, direction: str) -> Faults:
    def get(name: str) -> Any:
        attr = name.replace("-", "_")
        own = getattr(args, f"{direction}_{attr}")
        return own if own is not None else getattr(args, attr)

    burst = get("burst")
    return Faults(
        loss=get("loss") or 0.0,
        dup=get("dup") or 0.0,
        reorder=get("reorder") or 0.0,
        reorder_hold=(get("reorder-hold-ms") if get("reorder-hold-ms") is not None else 200.0) / 1000,
        delay=(get("delay-ms") or 0.0) / 1000,
        jitter=(get("jitter-ms") or 0.0) / 1000,
        burst=Burst(*burst) if burst else None,
        outages=tuple(tuple(o) for o in (get("outage") or ())),
    )


async def run(args: argparse.Namespace) -> Relay:
    relay = Relay(
        args.listen, args.upstream,
        up=faults_from_args(args, UP), down=faults_from_args(args, DOWN),
        seed=args.seed, rebind_every=args.rebind_every, rebind_at=args.rebind_at,
        duration=args.duration,
    )
    await relay.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay._close_now)
    a = relay.address
    print(f"fota-relay: {a[0]}:{a[1]} -> {args.upstream[0]}:{args.upstream[1]} "
          f"(seed {args.seed}; ctrl-c stops)", file=sys.stderr, flush=True)
    try:
        await relay.wait_closed()
    finally:
        await relay.close()
    return relay


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        relay = asyncio.run(run(args))
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:  # the listen port is taken, or the upstream cannot be resolved:
        print(f"fota-relay: {e.strerror or e}", file=sys.stderr)  # a configuration error,
        return 2  # like the gateway's
    print(json.dumps(relay.stats()) if args.json else relay.format_stats(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
