"""Block2 client rules of a ``device.fetch.Fetch`` (``device.stopwait``'s ``request`` and
``accept``) and the agent's reaction, sans-IO: responses are real CoAP datagrams
(``device.coap.encode``) decoded by the device core, fed to the generator."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import coap, lifecycle, rtt
from device.agent import Agent
from device.fetch import CORRUPT, GONE, RESTART, Fetch
from device.slots import FileSlots
from device.state import Store
from device.stopwait import DONE, OK, RETRY, accept, request
from proto import manifest, uris
from proto.codes import Op, Result
from proto.keys import CmdKey

IMAGE = hashlib.sha256(b"seed").digest() * 400  # 12,800 bytes
ETAG_A, ETAG_B = b"\xaa" * 8, b"\xbb" * 8


def response(code: int, payload: bytes = b"", *, block: tuple[int, bool, int] | None = None,
             etag: bytes | None = None, size2: int | None = None) -> coap.Message:
    opts: list[tuple[int, bytes]] = []
    if etag is not None:
        opts.append((coap.ETAG, etag))
    if block is not None:
        opts.append((coap.BLOCK2, coap.uint(coap.block_value(*block))))
    if size2 is not None:
        opts.append((coap.SIZE2, coap.uint(size2)))
    return coap.decode(coap.encode(coap.ACK, code, 1, b"t", opts, payload))


def serve(req: coap.Request, image: bytes = IMAGE, etag: bytes = ETAG_A, max_szx: int = 6,
          size2: int | None = None) -> coap.Message:
    num, asked = req.block2
    szx = min(asked, max_szx)
    bs = 16 << szx
    start = num * (16 << asked)  # a smaller size answers the same offset (RFC 7959 2.4)
    num = start // bs
    chunk = image[start:start + bs]
    return response(0x45, chunk, block=(num, start + bs < len(image), szx), etag=etag,
                    size2=len(image) if size2 is None else size2)


def fetch(tmp: Path, block: int = 1024) -> Fetch:
    slots = FileSlots(str(tmp / "slots"))
    slots.boot()
    f = Fetch(slots, "/f/00000000", len(IMAGE), hashlib.sha256(IMAGE).digest(), block)
    f.start(0)
    return f


def test_a_smaller_server_block_size_is_adopted_at_the_same_offset(tmp_path: Path) -> None:
    f = fetch(tmp_path, 1024)
    assert accept(f, serve(request(f))) == OK  # first block at 1024
    v = OK
    while v == OK:
        req = request(f)
        v = accept(f, serve(req, max_szx=4))  # the server now answers 256-byte blocks
    assert v == DONE and f.verified() and f.szx == 4


def test_changed_etag_wrong_block_size2_gone_and_overflow(tmp_path: Path) -> None:
    f = fetch(tmp_path)
    assert accept(f, serve(request(f))) == OK
    assert accept(f, serve(request(f), etag=ETAG_B)) == RESTART
    assert accept(f, response(0x45, b"x" * 1024, block=(5, True, 6), etag=ETAG_A,
                              size2=len(IMAGE))) == RETRY  # not the block asked for
    assert accept(f, serve(request(f), size2=len(IMAGE) + 1)) == CORRUPT
    assert accept(f, response(0x84)) == GONE  # 4.04
    assert accept(f, response(0xA3)) == RETRY  # 5.03: try again
    assert accept(f, serve(request(f), image=IMAGE + b"!" * 2000, size2=len(IMAGE))) == OK
    # a server that sends more than the manifest's size (and no Size2 to tell)
    slots = FileSlots(str(tmp_path / "slots2"))
    slots.boot()
    small = Fetch(slots, "/f/x", 100, hashlib.sha256(IMAGE[:100]).digest(), 64)
    small.start(0)
    assert accept(small, response(0x45, IMAGE[:64], block=(0, True, 2))) == OK
    assert accept(small, response(0x45, IMAGE[64:128], block=(1, True, 2))) == CORRUPT


def updating_agent(tmp_path: Path, image: bytes = IMAGE,
                   **config: Any) -> tuple[Agent, bytes, list[int], FileSlots]:
    """An agent (config plus ``config``) and the UPDATE command of ``image``; the events it
    goes through are appended to the list."""
    key = Ed25519PrivateKey.generate()
    digest = hashlib.sha256(image).digest()
    signed = manifest.sign(manifest.build(seq=2, vendor=manifest.DEFAULT_VENDOR, device_class="c",
                                          digest=digest, size=len(image),
                                          uri=uris.image_path(digest)), key)
    command = cbor2.dumps({CmdKey.OP: Op.UPDATE, CmdKey.JOB: 1, CmdKey.MANIFEST: signed})
    events: list[int] = []
    config = {"id": "etag", "class": "c", "version": 1, "block_size": 1024,
              "trust": [manifest.public_bytes(key.public_key()).hex()],
              "on_change": lambda e, old, new: events.append(e), **config}
    slots = FileSlots(str(tmp_path / "slots"))
    slots.boot()
    return Agent(config, slots, Store(str(tmp_path / "state.json"))), command, events, slots


def test_the_agent_restarts_an_image_whose_etag_changes(tmp_path: Path) -> None:
    # one Request per block, answered here
    agent, command, events, slots = updating_agent(tmp_path, transfer="stop-and-wait")
    blocks = 0
    wake = agent.wake()
    req = next(wake)
    try:
        for _ in range(100):
            if req.block2 is None:
                resp = response(0x44, command if agent.s["job"] is None else b"")
            else:
                blocks += 1
                resp = serve(req, etag=ETAG_A if blocks <= 5 else ETAG_B)  # changes once
            req = wake.send(resp)
    except StopIteration as e:
        assert e.value == ("reboot", 0)
    assert lifecycle.RESTART in events and agent.state == 3  # installed after starting over
    assert blocks == 6 + len(range(0, len(IMAGE), 1024))  # 5 kept, 1 refused, then all
    assert Path(slots.path("b")).read_bytes() == IMAGE
    assert agent.s["result"] == Result.INITIAL


class WindowLink:
    """The agent's link, sans-IO, on an injected clock: reports are answered by ``request``
    (the command while the agent has no job), a window (``run``) by ``coap.pump``: its block
    GETs from ``image`` with ETag ``etags[k]`` after the image changed k times (once every
    ``every`` blocks asked), the first ``answered`` of them (None: all; then the link is down),
    a report riding along with an empty 2.04."""

    def __init__(self, agent: Agent, command: bytes, etags: list[bytes], every: int,
                 image: bytes = IMAGE, answered: int | None = None) -> None:
        self.agent, self.command, self.etags, self.every = agent, command, etags, every
        self.image, self.answered = image, answered
        self.asked: list[int] = []  # block numbers, in the order asked
        self.now = 0
        self.rtt = rtt.Rtt(initial_ms=100, min_ms=10)
        self.mid = 0
        self.inbox: list[bytes] = []  # answers not yet received (a run may end before)

    def next_mid(self) -> int:
        self.mid += 1
        return self.mid

    def request(self, req: coap.Request) -> coap.Message:
        return response(0x44, self.command if self.agent.s["job"] is None else b"")

    def run(self, w: Any) -> None:
        inbox = self.inbox

        def send(d: bytes) -> None:
            m = coap.decode(d)
            if m.mtype == coap.ACK:  # to a CON from us: none here
                return
            if m.opt(coap.BLOCK2) is None:  # a report riding along
                inbox.append(coap.encode(coap.ACK, 0x44, m.mid, m.token, [], b""))
                return
            num, _, szx = coap.parse_block(coap.to_uint(m.opt(coap.BLOCK2)))
            self.asked.append(num)
            if self.answered is not None and len(self.asked) > self.answered:
                return
            etag = self.etags[min(len(self.asked) // self.every, len(self.etags) - 1)]
            bs = 16 << szx
            size = len(self.image)
            opts = [(coap.ETAG, etag),
                    (coap.BLOCK2, coap.uint(coap.block_value(num, (num + 1) * bs < size, szx))),
                    (coap.SIZE2, coap.uint(size))]
            inbox.append(coap.encode(coap.NON, 0x45, m.mid, m.token, opts,
                                     self.image[num * bs:(num + 1) * bs]))

        def recv(wait_ms: int) -> bytes | None:
            if inbox:
                return inbox.pop(0)
            self.now += max(wait_ms, 1)
            return None

        w.start(self.now, self.rtt, self.next_mid)
        coap.pump(w, send, recv, lambda: self.now)


def windowed_update(tmp_path: Path, etags: list[bytes]) -> tuple[Any, Agent, list[int], WindowLink]:
    """One wake of an agent with the default transfer (NON bursts) that is offered IMAGE, whose
    ETag changes after 7 and 14 blocks asked (``etags``: the ETags in turn)."""
    agent, command, events, slots = updating_agent(tmp_path)
    link = WindowLink(agent, command, etags, 7)
    result = coap.run(agent.wake(), link)
    assert events.count(lifecycle.RESTART) == 1
    restarted = link.asked.index(0, 1)  # the first block asked again: a new window
    assert link.asked[:7] == list(range(7)) and restarted >= 7
    return result, agent, events, link


def test_a_windowed_download_starts_over_once_when_the_etag_changes(tmp_path: Path) -> None:
    """An answer with another ETag ends the window (RESTART); the agent starts the image over
    in a new window, from block 0, and installs it."""
    result, agent, events, link = windowed_update(tmp_path, [ETAG_A, ETAG_B])
    assert result == ("reboot", 0) and agent.state == 3
    restarted = link.asked.index(0, 1)
    assert sorted(set(link.asked[restarted:])) == list(range(len(range(0, len(IMAGE), 1024))))
    assert Path(agent.slots.path("b")).read_bytes() == IMAGE
    assert agent.s["result"] == Result.INITIAL


def test_a_windowed_download_whose_etag_changes_twice_fails(tmp_path: Path) -> None:
    """The image changing again under the second window: it keeps changing, the job ends with
    an integrity failure and the running image stays."""
    result, agent, events, link = windowed_update(tmp_path, [ETAG_A, ETAG_B, ETAG_A])
    assert result[0] == "sleep" and agent.state == lifecycle.IDLE
    assert lifecycle.CORRUPT in events and agent.s["result"] == Result.INTEGRITY_FAILURE
    assert agent.slots.running() == "a"


def test_a_windowed_download_keeps_the_etag_for_the_next_wake(tmp_path: Path) -> None:
    """The ETag the window learned is saved with the offset and checked by the next wake's
    window: an image that changed under its URI while the device slept is started over
    (docs/device.md, power cuts, row 3), not downloaded to the end and refused."""
    image = IMAGE * 3  # 37.5 blocks: the offset is saved after 16 of them
    agent, command, events, slots = updating_agent(tmp_path, image)
    link = WindowLink(agent, command, [ETAG_A], 1, image, answered=20)  # then the link is down
    assert coap.run(agent.wake(), link)[0] == "sleep" and agent.state == lifecycle.DOWNLOADING
    assert agent.s["offset"] == 16384 and agent.s["img"]["etag"] == ETAG_A.hex()
    assert lifecycle.RESTART not in events
    link.etags, link.answered, link.asked = [ETAG_B], None, []  # changed in the meantime
    assert coap.run(agent.wake(), link) == ("reboot", 0) and agent.state == 3
    assert events.count(lifecycle.RESTART) == 1 and 0 in link.asked
    assert Path(slots.path("b")).read_bytes() == image


def test_a_401_with_echo_is_answered_with_the_echo(tmp_path: Path) -> None:
    """RFC 9175: the gateway challenges a source it has not verified (a NAT rebinding between a
    report and the blocks); the stop-and-wait download asks again carrying the Echo."""
    f = fetch(tmp_path)
    assert (coap.ECHO, b"\x01\x02\x03") not in request(f).options
    challenge = coap.decode(coap.encode(coap.ACK, 0x81, 1, b"t", [(coap.ECHO, b"\x01\x02\x03")],
                                        b""))
    assert accept(f, challenge) == RETRY
    assert (coap.ECHO, b"\x01\x02\x03") in request(f).options
    assert accept(f, serve(request(f))) == OK
    assert accept(f, response(0x81)) == GONE  # a 4.01 without an Echo: not for this source
