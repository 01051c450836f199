"""``device.burst``: windowed NON Block2 downloads against the real gateway, directly and
through the fault relay (loss both ways, reordering), plus the refusals (ETag change, error
answer, dead link)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import publish_image

from device import burst, coap
from proto import uris
from sim.relay import DOWN, UP, Faults, Relay

LO = "127.0.0.1"
SIZE = 64 * 1024


def image(size: int = SIZE) -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size // 32))


async def published(ctx, gw, data: bytes) -> str:  # type: ignore[no-untyped-def]
    img = await publish_image(ctx, gw, data, Ed25519PrivateKey.generate(), seq=2,
                              device_class="burst-test")
    return f"{uris.FIRMWARE}/{img['id']}"


def collect() -> tuple[bytearray, object]:
    out = bytearray()

    def write(off: int, data: bytes) -> None:
        assert off == len(out), "bytes must come in order"
        out.extend(data)

    return out, write


async def test_window_8_byte_identical(gateway, coap_client) -> None:
    data = image()
    path = await published(coap_client, gateway, data)
    out, write = collect()
    ok = await asyncio.to_thread(burst.fetch, LO, gateway.device_port, path, len(data), write,
                                 6, 8, 500)
    assert ok is True
    assert bytes(out) == data


async def test_lossy_reordering_link_completes(gateway, coap_client) -> None:
    data = image()
    path = await published(coap_client, gateway, data)
    f = Faults(loss=0.2, reorder=0.2, reorder_hold=0.05, delay=0.005)
    async with Relay((LO, 0), (LO, gateway.device_port), up=f, down=f, seed=7,
                     duration=60) as relay:
        out, write = collect()
        t0 = time.monotonic()
        ok = await asyncio.to_thread(burst.fetch, LO, relay.address[1], path, len(data), write,
                                     6, 8, 100)
        assert time.monotonic() - t0 < 20
        up, down = relay.counters[UP], relay.counters[DOWN]
    assert ok is True
    assert bytes(out) == data
    assert up.lost > 0 and down.lost > 0 and up.reordered + down.reordered > 0


def answer(req: bytes, etag: bytes, size: int = 64, code: int = burst.CONTENT,
           num: int | None = None) -> bytes:
    m = coap.decode(req)
    n, _, szx = coap.parse_block(coap.to_uint(m.opt(coap.BLOCK2)))
    n = n if num is None else num
    bs = 1 << (szx + 4)
    more = (n + 1) * bs < size
    payload = bytes(min(bs, size - n * bs)) if code == burst.CONTENT else b"gone"
    return coap.encode(coap.NON, code, 1, m.token,
                       [(coap.ETAG, etag), (coap.BLOCK2, coap.uint(coap.block_value(n, more, szx))),
                        (coap.SIZE2, coap.uint(size))], payload)


def test_etag_change_raises() -> None:
    b = burst.Burst("f/abcd1234", 64, 0, window=4, timeout_ms=100)  # 4 blocks of 16
    b.poll(0)
    reqs, b.outgoing = b.outgoing, []
    assert len(reqs) == 4 and all(coap.decode(r).mtype == coap.NON for r in reqs)
    assert b.on_datagram(answer(reqs[1], b"A" * 8), 1) == [(16, bytes(16))]
    assert b.on_datagram(answer(reqs[1], b"A" * 8), 1) == []  # duplicate
    assert b.on_datagram(b"\x40", 1) == []  # malformed
    assert b.take() == (0, b"")  # block 0 still missing: nothing in order yet
    with pytest.raises(burst.BurstError, match="ETag changed"):
        b.on_datagram(answer(reqs[0], b"B" * 8), 2)


def test_error_answer_and_wrong_block_raise() -> None:
    b = burst.Burst("f/abcd1234", 64, 0, window=2)
    b.poll(0)
    with pytest.raises(burst.BurstError, match="4.04"):
        b.on_datagram(answer(b.outgoing[0], b"A" * 8, code=coap.code(4, 4)), 1)
    with pytest.raises(burst.BurstError, match="Block2"):
        b.on_datagram(answer(b.outgoing[1], b"A" * 8, num=3), 1)


def test_rerequest_backs_off_then_fails() -> None:
    b = burst.Burst("f/abcd1234", 16, 0, timeout_ms=100, max_tries=3, max_timeout_ms=150)
    times = []
    now = 0
    while not b.failed and now < 10_000:
        b.poll(now)
        times += [now] * len(b.outgoing)
        b.outgoing = []
        now = b.deadline if b.deadline is not None else now
    assert b.failed and times == [0, 100, 250]  # 100, then doubled and capped at 150


def test_dead_link_fails_cleanly() -> None:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LO, 0))  # a peer that never answers
    try:
        t0 = time.monotonic()
        ok = burst.fetch(LO, s.getsockname()[1], "f/abcd1234", 4096, lambda o, d: None,
                         timeout_ms=20, max_tries=3)
        assert ok is False and time.monotonic() - t0 < 5
    finally:
        s.close()


def test_resume_from_offset_asks_only_the_rest() -> None:
    b = burst.Burst("f/abcd1234", 64, 0, window=8, offset=32)
    b.poll(0)
    nums = [coap.parse_block(coap.to_uint(coap.decode(r).opt(coap.BLOCK2)))[0]
            for r in b.outgoing]
    assert nums == [2, 3]
    for r in b.outgoing:
        b.on_datagram(answer(r, b"A" * 8), 1)
    assert b.take() == (32, bytes(32)) and b.done
    with pytest.raises(ValueError):
        burst.Burst("f/abcd1234", 64, 0, offset=20)
