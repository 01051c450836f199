"""Firmware Block2 serving: random access, cold, any client, any block size, right bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

import pytest
from aiocoap import CON, GET, NON, Message
from aiocoap.optiontypes import BlockOption
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import GatewayProc, publish_image, publish_image_sync
from test_gateway_flow import fetch

from proto import uris

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gateway blocks key").digest())
MIB = 1 << 20


def raw_get(sock: socket.socket, port: int, path: str, mid: int, block2=None, mtype=CON,
            token: bytes = b"\x01", **opts) -> Message:
    """One hand-sent GET on a plain UDP socket; returns the decoded response."""
    m = Message(code=GET, uri_path=tuple(path.split("/")), **opts)
    m.mtype, m.mid, m.token = mtype, mid, token
    if block2 is not None:
        m.opt.block2 = BlockOption.BlockwiseTuple(*block2)
    sock.sendto(m.encode(), ("127.0.0.1", port))
    sock.settimeout(5)
    data, _ = sock.recvfrom(2048)
    return Message.decode(data)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One gateway serving one 1 MiB image for the read-only tests of this module."""
    gw = GatewayProc(tmp_path_factory.mktemp("blocks") / "data").start()
    data = os.urandom(MIB)

    try:
        yield gw, data, publish_image_sync(gw, data, KEY, seq=5, device_class="esp32")
    finally:
        gw.stop()


@pytest.fixture
def gateway(served):
    return served[0]


@pytest.fixture
def image_1mib(served):
    return served[1], served[2]


@pytest.mark.parametrize("szx", [2, 6])  # 64 and 1024 bytes
async def test_aiocoap_client_downloads_1mib(gateway, coap_client, image_1mib, szx):
    data, img = image_1mib
    got = await fetch(coap_client, gateway.device_uri + img["uri"], szx)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", [64, 1024])
async def test_libcoap_client_downloads_1mib(gateway, image_1mib, tmp_path, size):
    data, img = image_1mib
    out = tmp_path / "out.bin"
    p = await asyncio.create_subprocess_exec(
        "coap-client-notls", "-m", "get", "-b", str(size), "-B", "60", "-o", str(out),
        f"{gateway.device_uri}{img['uri']}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    stdout, _ = await asyncio.wait_for(p.communicate(), 90)
    assert p.returncode == 0, stdout
    assert hashlib.sha256(out.read_bytes()).hexdigest() == img["digest"]


async def test_cold_block_from_new_socket(gateway, image_1mib):
    data, img = image_1mib
    digest = bytes.fromhex(img["digest"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        r = raw_get(s, gateway.device_port, img["uri"][1:], 0x4242, block2=(500, False, 6))
    assert r.code.dotted == "2.05" and r.mid == 0x4242
    assert r.payload == data[500 * 1024:501 * 1024]
    assert r.opt.block2.block_number == 500 and r.opt.block2.more and r.opt.block2.size_exponent == 6
    assert r.opt.etag == uris.etag(digest) and r.opt.size2 == MIB


async def test_block_edges(gateway, image_1mib):
    data, img = image_1mib
    path = img["uri"][1:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        first = raw_get(s, gateway.device_port, path, 1)  # no Block2: first 1024 + more
        assert first.payload == data[:1024] and first.opt.block2.more
        assert first.opt.size2 == MIB
        asked = raw_get(s, gateway.device_port, path, 2, block2=(0, False, 4), size2=0)
        assert asked.opt.size2 == MIB and asked.payload == data[:256]
        last = raw_get(s, gateway.device_port, path, 3, block2=(MIB // 64 - 1, False, 2))
        assert last.payload == data[-64:] and not last.opt.block2.more
        past = raw_get(s, gateway.device_port, path, 4, block2=(MIB // 64, False, 2))
        assert past.code.dotted == "4.02"
        missing = raw_get(s, gateway.device_port, "f/00000000", 5, block2=(0, False, 6))
        assert missing.code.dotted == "4.04"
        bert = raw_get(s, gateway.device_port, path, 7, block2=(1, False, 7))
        assert bert.code.dotted == "4.00"
        non = raw_get(s, gateway.device_port, path, 6, block2=(3, False, 6), mtype=NON)
        assert non.mtype == NON and non.payload == data[3072:4096]


async def test_reused_message_id_gets_the_new_block(gateway, image_1mib):
    """What a client sees after its 16-bit message IDs wrap: same MID, another block.
    Deduplication would replay the stale block; block GETs are not deduplicated."""
    data, img = image_1mib
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for num in (7, 8, 9):
            r = raw_get(s, gateway.device_port, img["uri"][1:], 0x0101, block2=(num, True, 6),
                        token=bytes([num]))
            assert r.payload == data[num * 1024:(num + 1) * 1024] and r.token == bytes([num])


async def test_corrupt_blob_is_not_served(tmp_path, coap_client):
    gateway = GatewayProc(tmp_path / "data").start()
    img = await publish_image(coap_client, gateway, os.urandom(200_000), KEY, seq=5,
                              device_class="esp32")
    blob = gateway.data / "blobs" / img["digest"]
    good = blob.read_bytes()
    raw = bytearray(good)
    raw[123_456] ^= 0x01  # one flipped bit: bit rot
    blob.write_bytes(raw)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            r = raw_get(s, gateway.device_port, img["uri"][1:], 9, block2=(0, True, 6))
            assert r.code.dotted == "5.00"
            assert raw_get(s, gateway.device_port, img["uri"][1:], 10).code.dotted == "5.00"
        assert gateway.log_text().count("does not hash to its name") == 1  # one event
        blob.write_bytes(good)  # repaired (restored from a backup): served again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(30):  # the file is looked at again within a second
                r = raw_get(s, gateway.device_port, img["uri"][1:], 11, block2=(1, True, 6))
                if r.code.dotted == "2.05":
                    break
                await asyncio.sleep(0.1)
            assert r.payload == good[1024:2048]
            blob.unlink()  # lost
            for _ in range(30):
                r = raw_get(s, gateway.device_port, img["uri"][1:], 12, block2=(1, True, 6))
                if r.code.dotted == "5.00":
                    break
                await asyncio.sleep(0.1)
            assert r.payload == b"image blob missing"
            raw_get(s, gateway.device_port, img["uri"][1:], 13, block2=(2, True, 6))
        assert gateway.log_text().count("blob file is missing") == 1
    finally:
        gateway.stop()


def test_memory_stays_flat_under_block_load(served):
    """Invariant 5: 12,000 block requests from one socket leave RSS where it was (aiocoap's
    deduplication cache alone would keep ~4 KiB per request, ~48 MB here)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import gateway_blocks as bench

    gw, data, img = served
    assert gw.proc is not None
    r = bench.measure(gw.proc.pid, gw.device_port, ("f", img["id"]), data, 12_000, 16)
    assert r["bad"] == 0
    assert r["rss_after"] - r["rss_before"] < 8 * 1024, r  # KiB
