"""The agent's Block2 download against another implementation: libcoap's ``coap-server-notls``.

A 256 KiB file is PUT into one of the server's dynamic resources with ``coap-client-notls``;
the device's ``fetch.Fetch`` (over the asyncio link) then downloads it into a slot at block
sizes 64 and 1024: the slot's SHA-256 equals the file's, and libcoap's ETag and Size2 were
accepted along the way.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from harness import free_udp_port

from device.fetch import Fetch
from device.slots import FileSlots
from device.stopwait import DONE, OK, accept, request
from sim.aio import AioLink

SIZE = 256 * 1024


@pytest.fixture
def libcoap_file(tmp_path: Path):
    """(port, path, bytes): coap-server-notls holding a 256 KiB file at /image."""
    data = os.urandom(SIZE)
    f = tmp_path / "image.bin"
    f.write_bytes(data)
    port = free_udp_port()
    server = subprocess.Popen(["coap-server-notls", "-A", "127.0.0.1", "-p", str(port), "-d", "4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            put = subprocess.run(["coap-client-notls", "-m", "put", "-b", "1024", "-f", str(f),
                                  "-B", "5", f"coap://127.0.0.1:{port}/image"],
                                 capture_output=True, timeout=15)
            if put.returncode == 0:
                break
            assert time.monotonic() < deadline, put.stderr
            time.sleep(0.1)
        yield port, "/image", data
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.parametrize("block_size", [64, 1024])
async def test_fetch_from_libcoap_server(libcoap_file, tmp_path: Path, block_size: int) -> None:
    port, path, data = libcoap_file
    slots = FileSlots(str(tmp_path / "slots"), capacity=SIZE)
    slots.boot()
    f = Fetch(slots, path, SIZE, hashlib.sha256(data).digest(), block_size)
    f.start(0)
    link = await AioLink.open("127.0.0.1", port, ack_timeout=1.0)
    try:
        for _ in range(SIZE // block_size + 10):
            resp = await link.request(request(f))
            assert resp is not None
            v = accept(f, resp)
            if v == DONE:
                break
            assert v == OK, v
    finally:
        link.close()
    assert f.verified()
    assert f.etag is not None  # libcoap sends one; it was checked on every block
    assert hashlib.sha256(Path(slots.path("b")).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert link.exchanges == SIZE // block_size
