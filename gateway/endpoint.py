"""The device bind's CoAP message layer: our own UDP socket, no aiocoap context.

Every datagram goes through, in order: the rate limits (``ratelimit``), the block fast path
(``blockwire``: a well-formed ``GET f/<id>`` from a verified source is answered from the bytes),
aiocoap's ``Message.decode`` (its public codec; a datagram it cannot decode is dropped, a CON
one answered with Reset), then the message layer here: Reset and ping, 4.02 for unknown critical
options, 4.01 + Echo for a GET from an unverified source (``sources``), the per-device reply
cache for reports (``replies``), and observations of ``c/<id>`` (``observe``). Each of those
holds state with a cap and an expiry; nothing here grows with traffic. ``device_api`` makes the
responses.

Nothing here waits on the database: a report, a command GET, an uncached firmware block and a
notification are handed to the store's thread (``StoreWorker``) and answered from the loop when
it is done; meanwhile the loop serves other datagrams (pings, cached blocks). A report is
answered only once it is durable; the reports of a burst share one commit there. A
retransmission of a report still being applied is dropped (its answer is on the way), and when
``StoreWorker.full`` the datagram gets 5.03 at once: the work waiting is bounded.

The socket is IPv6 with IPv4-mapped addresses (one socket for both families, as aiocoap's
``udp6``), and replies leave from the address the request came to (IPV6_PKTINFO), which matters
on a multi-homed host bound to ``[::]``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiocoap import ACK, CON, NON, RST, Message
from aiocoap.error import UnparsableMessage
from aiocoap.numbers.codes import Code

from proto import uris

from .blockwire import ACK as ACK_TYPE
from .blockwire import CON as CON_TYPE
from .blockwire import parse_block_get
from .coapx import error, failure, unavailable
from .device_api import DeviceApi
from .observe import Observations
from .ratelimit import RateLimiter, exempt, host_key, prefixes
from .replies import Replies
from .sources import Sources

log = logging.getLogger("fota.gateway")

READS_PER_WAKE = 64  # datagrams read per readable event before yielding to the loop,
WAKE_BUDGET = 0.002  # or fewer once this many seconds went by: the control bind, the answers
# from the store's thread and the timers must get their turn
NOTIFY_BATCH = 32  # Observe notifications started per turn, then a pause of NOTIFY_GAP seconds:
NOTIFY_GAP = 0.01  # a released wave of 25,000 devices is told over seconds, not in one burst
# that overflows their socket buffers (and the store's queue)
# the options a request on this bind may carry; any other critical (odd) one is 4.02
_UNDERSTOOD = {3, 6, 7, 11, 12, 14, 17, 23, 27, 28, 60, 252}  # Uri-Host, Observe, Uri-Port,
# Uri-Path, Content-Format, Max-Age, Accept, Block2, Block1, Size2, Size1, Echo
OPT_ECHO = 252
_FW, _REPORT, _COMMAND = uris.FIRMWARE, uris.REPORT, uris.COMMAND


def slow_down(data: bytes, max_age: int, next_mid: Callable[[], int]) -> bytes | None:
    """5.03 Service Unavailable + Max-Age (a NON, fresh message id, the token echoed, no
    payload) for a NON GET, a windowed download's block request; None for anything else.
    Dropped, a NON GET looks like loss to the device's window, which asks again at once. A
    CON request stays dropped (its CoAP layer retransmits with exponential back-off already;
    an agent's report answered 5.03 would count as failed), and so does a NON POST."""
    if len(data) < 4:
        return None
    b0 = data[0]
    tkl = b0 & 0x0F
    if b0 >> 4 != 5 or tkl > 8 or len(data) < 4 + tkl or data[1] != 1:
        return None
    mid = next_mid()
    head = bytes((0x50 | tkl, 0xA3, mid >> 8, mid & 0xFF))
    age = max_age.to_bytes(1 if max_age < 256 else 2, "big") if max_age else b""
    return head + data[4:4 + tkl] + bytes((0xD0 | len(age), 14 - 13)) + age  # option 14


def address_text(addr: Any) -> str:
    """'ip:port' / '[ip]:port', v4-mapped addresses shown as IPv4."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


#: bytes of socket receive buffer the device port asks for (kernel memory, used only when
#: datagrams queue faster than the loop reads them)
RECEIVE_BUFFER = 4 << 20

class DeviceEndpoint:
    def __init__(self, api: DeviceApi, *, limiter: RateLimiter | None, sources: Sources,
                 replies: Replies, observations: Observations, limit_loopback: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.limiter = limiter
        self.sources = sources
        self.replies = replies
        self.observations = observations
        self.limit_loopback = limit_loopback
        self.clock = clock
        self.sock: socket.socket | None = None
        self._mid = int.from_bytes(os.urandom(2), "big")
        self._keys: dict[str, tuple[bytes, bool]] = {}
        self.challenged = 0  # 4.01 + Echo sent
        self.failed = 0  # datagrams whose handling raised (a bug)
        self._failure_logged = -60.0
        self.worker = api.worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[tuple[Any, int]] = set()  # (source, message id) of reports applying
        self._tasks: set[asyncio.Task[None]] = set()  # uncached block requests being answered
        #: devices whose observers are to be told (ordered, each once), drained by _notify_some
        self._to_notify: dict[str, None] = {}
        self._notifying: asyncio.Handle | None = None
        self._changed: collections.deque[str] = collections.deque()  # from the store's thread
        self._changed_pending = False  # a _take_changed is scheduled on the loop
        api.fleet.on_command_change = self.changed

    # ---- I/O ------------------------------------------------------------------------------
    def counters(self) -> dict[str, dict[str, int]]:
        """What the device port turned away or answered from memory, for ``/metrics``:
        datagrams the rate limits dropped, by budget, and the other events by kind."""
        return {"dropped": dict(self.limiter.dropped) if self.limiter is not None else {},
                "events": {"echo_challenge": self.challenged,
                           "report_replay": self.replies.replayed,
                           "observe_refused": self.observations.refused,
                           "handler_failure": self.failed}}

    def open(self, bind: tuple[str, int]) -> int:
        """Bind (OSError if the port is taken) and start reading; returns the port."""
        host, port = bind
        info = socket.getaddrinfo(host or "::", port, socket.AF_INET6, socket.SOCK_DGRAM, 0,
                                  socket.AI_V4MAPPED | socket.AI_PASSIVE)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            # a released wave's reports, or a burst of block GETs, arrive at once: the kernel's
            # default ~208 KiB holds ~270 datagrams; Linux caps this at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setblocking(False)
            sock.bind(info[0][4])
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        return sock.getsockname()[1]

    def close(self) -> None:
        if self._notifying is not None:
            self._notifying.cancel()
            self._notifying = None
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self._read_burst(sock)

    def _read_burst(self, sock: socket.socket) -> None:
        until = time.monotonic() + WAKE_BUDGET
        for _ in range(READS_PER_WAKE):
            if time.monotonic() > until:
                return
            try:
                data, anc, _flags, addr = sock.recvmsg(2048, 128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. an ICMP error queued on the socket
                log.debug("device socket: %s", e)
                return
            try:
                self.datagram(data, anc, addr)
            except Exception as e:  # a bug must cost one datagram, never the gateway
                self._failed(e, addr)

    def _send(self, data: bytes, anc: list, addr: Any) -> None:
        # ``anc`` is what recvmsg gave: only IPV6_PKTINFO was asked for, and it is what makes
        # the reply leave from the address the request came to
        try:
            self.sock.sendmsg([data], anc, 0, addr)  # type: ignore[union-attr]
        except OSError as e:  # a full buffer, an unreachable net: the client retransmits
            log.debug("response to %s not sent: %s", address_text(addr), e)

    # ---- the store's thread --------------------------------------------------------------
    def busy(self) -> bool:
        """Too much work waits for the store: shed this request (5.03) instead of queueing."""
        return self.worker.full() or len(self._tasks) >= self.worker.max_pending

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failed(task.exception(), None)  # type: ignore[arg-type]

    def _failed(self, e: BaseException, addr: Any) -> None:
        self.failed += 1
        now = self.clock()
        if now - self._failure_logged >= 60.0:  # one line a minute, not one per datagram
            self._failure_logged = now
            log.error("device datagram from %s failed (%d so far): %s: %s",
                      "?" if addr is None else address_text(addr), self.failed,
                      type(e).__name__, e)

    def next_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    # ---- the message layer ----------------------------------------------------------------
    def _key(self, host: str) -> tuple[bytes, bool]:
        """(packed address, exempt from limits), memoised: a device sends many datagrams."""
        got = self._keys.get(host)
        if got is None:
            key = host_key(host)
            got = (key, exempt(key, self.limit_loopback))
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[host] = got
        return got

    def _trusted(self, key: bytes) -> bool:
        return exempt(key, self.limit_loopback)

    def datagram(self, data: bytes, anc: list, addr: Any) -> None:
        key, trusted = self._key(addr[0])
        verified = trusted or self.sources.verified(key)
        if self.limiter is not None and not trusted and not self.limiter.allow(key, verified):
            age = self.limiter.slow_down(verified)
            if age is not None:
                out = slow_down(data, age, self.next_mid)
                if out is not None:
                    self._send(out, anc, addr)
            return
        if verified:
            req = parse_block_get(data)
            if req is not None:
                mtype, mid, token, image_id, num, szx = req
                if mtype == CON_TYPE:
                    mtype = ACK_TYPE
                else:
                    mid = self.next_mid()
                try:
                    out = self.api.wire_block(mtype, mid, token, image_id, num, szx)
                except Exception as e:  # the Message path below answers (and logs) it
                    log.debug("block fast path declined: %s", e)
                    out = None
                if out is not None:
                    self._send(out, anc, addr)
                    return
        try:
            msg = Message.decode(data, addr)
        except (UnparsableMessage, ValueError):
            # RFC 7252 4.2: reject a CON we cannot process; the header is enough for that
            if len(data) >= 4 and data[0] >> 4 == 0x4:
                self._send(bytes((0x70, 0, data[2], data[3])), anc, addr)
            return
        self.message(msg, key, verified, anc, addr)

    def message(self, msg: Message, key: bytes, verified: bool, anc: list, addr: Any) -> None:
        if msg.mtype is RST:
            self.observations.reset(prefixes(key)[0], addr, msg.mid)
            return
        if msg.mtype is ACK:
            return  # we send no CON, so an ACK acknowledges nothing of ours
        code = int(msg.code)
        if code == 0:  # ping (CON) or nonsense (NON): Reset answers a ping
            if msg.mtype is CON:
                self._send(bytes((0x70, 0, msg.mid >> 8, msg.mid & 0xFF)), anc, addr)
            return
        if not 1 <= code <= 31:  # a response sent to a server
            if msg.mtype is CON:
                self._send(bytes((0x70, 0, msg.mid >> 8, msg.mid & 0xFF)), anc, addr)
            return
        for option in msg.opt.option_list():
            n = int(option.number)
            if n & 1 and n not in _UNDERSTOOD:
                self._reply(msg, error(Code.BAD_OPTION, f"option {n} is not understood"),
                            anc, addr)
                return
        path = msg.opt.uri_path
        head = path[0] if path else ""
        if head == _REPORT and len(path) == 1:
            self.report(msg, key, anc, addr)
            return
        if head in (_FW, _COMMAND) and not verified and msg.code is Code.GET:
            echo = msg.opt.echo
            if echo is None or not self.sources.check_echo(key, echo):
                # no payload: the answer is about as small as the request (no amplification)
                self.challenged += 1
                self._reply(msg, Message(code=Code.UNAUTHORIZED,
                                         echo=self.sources.echo_for(key)), anc, addr)
                return
        if head == _FW:
            if self.busy():
                self._reply(msg, unavailable("gateway busy, retry later"), anc, addr)
            else:
                self._spawn(self._block(msg, anc, addr))
        elif head == _COMMAND:
            self.command(msg, key, anc, addr)
        else:
            self._reply(msg, error(Code.NOT_FOUND, "no such resource"), anc, addr)

    def _encode(self, request: Message, response: Message) -> bytes:
        response.token = request.token
        if request.mtype is CON:
            response.mtype, response.mid = ACK, request.mid
        else:
            response.mtype, response.mid = NON, self.next_mid()
        return response.encode()

    def _reply(self, request: Message, response: Message, anc: list, addr: Any) -> None:
        self._send(self._encode(request, response), anc, addr)

    async def _block(self, msg: Message, anc: list, addr: Any) -> None:
        self._reply(msg, await self.api.block(msg), anc, addr)

    def report(self, msg: Message, key: bytes, anc: list, addr: Any) -> None:
        decoded = self.api.decode_report(msg.payload)  # once: the store thread takes it along
        device_id = decoded[1].id if decoded is not None else None
        if device_id is not None:
            again = self.replies.get(device_id, addr, msg.mid, msg.payload)
            if again is not None:
                self._send(again, anc, addr)
                return
        flight = (addr, msg.mid)
        if flight in self._in_flight:
            return  # a retransmission of a report being applied: its answer is on the way
        if self.busy():
            self._reply(msg, unavailable("gateway busy, retry later"), anc, addr)
            return
        self._in_flight.add(flight)
        address = address_text(addr)
        # grouped: the reports waiting share one commit; the answer comes once it is durable
        fut = self.worker.call(lambda: self.api.report(msg, address, decoded), grouped=True,
                               device=device_id)

        def answer(f: asyncio.Future[Message]) -> None:
            self._in_flight.discard(flight)
            try:
                response = f.result()
            except Exception as e:  # the commit failed: 5.03 (nothing of the report is kept)
                response = failure(e, "device")
            if (not response.code.is_successful() and not self._trusted(key)
                    and not self.sources.verified(key)):
                response.payload = b""  # no diagnostic text to a source that may be spoofed
            out = self._encode(msg, response)
            if device_id is not None and response.code is Code.CHANGED:
                self.replies.put(device_id, addr, msg.mid, msg.payload, out)
                self.sources.verify(key)
            self._send(out, anc, addr)

        fut.add_done_callback(answer)

    def command(self, msg: Message, key: bytes, anc: list, addr: Any) -> None:
        if self.busy():
            self._reply(msg, unavailable("gateway busy, retry later"), anc, addr)
            return
        fut = self.worker.call(lambda: self.api.command(msg))

        def answer(f: asyncio.Future[Message]) -> None:
            try:
                response = f.result()
            except Exception as e:
                response = failure(e, "device")
            observe = msg.opt.observe
            source = prefixes(key)[0]
            if observe == 1:
                self.observations.deregister(source, addr, msg.token)
            elif observe == 0 and response.code is Code.CONTENT:
                obs = self.observations.register(msg.opt.uri_path[1], source, addr, msg.token,
                                                 anc)
                if obs is not None:
                    obs.seq += 1
                    response.opt.observe = obs.seq
                    response.opt.max_age = int(self.observations.lifetime)
            self._reply(msg, response, anc, addr)

        fut.add_done_callback(answer)

    def changed(self, device_id: str) -> None:
        """``Fleet.on_command_change``, called on the store's thread: ``notify`` on the loop.
        One wake-up of the loop per batch of changes, not one syscall each (a released phase
        changes 25,000 devices' commands in one unit)."""
        self._changed.append(device_id)  # deque: appends and pops are thread-safe
        loop = self._loop
        if loop is not None and not self._changed_pending:
            self._changed_pending = True
            try:
                loop.call_soon_threadsafe(self._take_changed)
            except RuntimeError:  # the loop closed
                pass

    def _take_changed(self) -> None:
        self._changed_pending = False  # before draining: a later change schedules another
        while self._changed:
            self.notify(self._changed.popleft())

    def notify(self, device_id: str) -> None:
        """The device's pending command may have changed: its observers are told (NON) soon,
        a few at a time (``NOTIFY_BATCH``), each once however often it changed meanwhile."""
        if not self.observations.watched(device_id) or device_id in self._to_notify:
            return  # nobody observes it (the common case), or it is queued already
        self._to_notify[device_id] = None
        if self._notifying is None and self._loop is not None:
            self._notifying = self._loop.call_soon(self._notify_some)

    def _notify_some(self) -> None:
        self._notifying = None
        for _ in range(min(NOTIFY_BATCH, len(self._to_notify))):
            if self.busy():
                break  # the store is behind: the rest waits (nothing is dropped)
            device_id = next(iter(self._to_notify))
            del self._to_notify[device_id]
            self._notify_now(device_id)
        if self._to_notify and self._loop is not None and self.sock is not None:
            self._notifying = self._loop.call_later(NOTIFY_GAP, self._notify_some)

    def _notify_now(self, device_id: str) -> None:
        """Tell the device's observers, with the command as the store's thread reads it (after
        the change committed)."""
        if next(self.observations.of(device_id), None) is None:
            return  # expired meanwhile
        request = Message(code=Code.GET, uri_path=(_COMMAND, device_id))
        fut = self.worker.call(lambda: self.api.command(request))

        def send(f: asyncio.Future[Message]) -> None:
            try:
                response = f.result()
            except Exception as e:
                self._failed(e, None)
                return
            now = self.clock()
            for obs in self.observations.of(device_id):
                if response.code is not Code.CONTENT:  # e.g. a key was enrolled meanwhile
                    self.observations.deregister(obs.source, obs.remote, obs.token)
                    continue
                obs.seq = (obs.seq + 1) & 0xFFFFFF
                response.opt.observe = obs.seq
                response.opt.max_age = max(0, int(obs.expires - now))
                response.token, response.mtype = obs.token, NON
                response.mid = obs.mid = self.next_mid()
                self._send(response.encode(), obs.ancdata, obs.remote)

        fut.add_done_callback(send)

    def expire(self) -> None:
        self.sources.expire()
        self.replies.expire()
        self.observations.expire()
