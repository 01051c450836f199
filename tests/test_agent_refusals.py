"""Images a device must refuse, through the real gateway and cc: a signature by an untrusted
key, another vendor/class, an image altered in transit, a replayed older manifest. Each time
the running image stays untouched and ``cc status --json`` shows the device's reason.

The last two need a man in the middle: a small UDP relay between device and gateway that
rewrites what the gateway sends (flips a byte of every firmware block; swaps the manifest in a
command for an older one, validly signed: a replay).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from aiocoap import Message
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cc import keys as cc_keys
from proto import manifest, uris
from proto.keys import CmdKey
from sim.main import FACTORY_IMAGE
from test_agent_e2e import CLASS, Ops, image_bytes, job_of, spec, start_devices


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, back: Callable[[bytes], None]) -> None:
        self.back = back

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.back(data)


class Mitm(asyncio.DatagramProtocol):
    """Device-facing UDP relay; one upstream socket per device; ``rewrite`` gateway datagrams."""

    def __init__(self, gateway_port: int, rewrite: Callable[[bytes], bytes]) -> None:
        self.gateway_port = gateway_port
        self.rewrite = rewrite
        self.upstreams: dict[Any, asyncio.DatagramTransport] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.rewritten = 0

    @classmethod
    async def start(cls, gateway_port: int, rewrite: Callable[[bytes], bytes]) -> "Mitm":
        loop = asyncio.get_running_loop()
        _, m = await loop.create_datagram_endpoint(lambda: cls(gateway_port, rewrite),
                                                   local_addr=("127.0.0.1", 0))
        return m

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        up = self.upstreams.get(addr)
        if up is None:
            asyncio.ensure_future(self._open(addr, data))
        else:
            up.sendto(data)

    async def _open(self, addr: Any, first: bytes) -> None:
        loop = asyncio.get_running_loop()

        def back(data: bytes) -> None:
            out = self.rewrite(data)
            self.rewritten += out != data
            assert self.transport is not None
            self.transport.sendto(out, addr)

        up, _ = await loop.create_datagram_endpoint(lambda: _Upstream(back),
                                                    remote_addr=("127.0.0.1", self.gateway_port))
        self.upstreams[addr] = up
        up.sendto(first)

    def close(self) -> None:
        for up in self.upstreams.values():
            up.close()
        if self.transport is not None:
            self.transport.close()


def flip_block_payloads(data: bytes) -> bytes:
    if len(data) < 600:  # reports and commands are small; firmware blocks are 1 KiB
        return data
    return data[:-1] + bytes([data[-1] ^ 0x01])


def replace_manifest(older: bytes) -> Callable[[bytes], bytes]:
    def rewrite(data: bytes) -> bytes:
        try:
            m = Message.decode(data)
            cmd = cbor2.loads(m.payload) if m.payload else None
        except Exception:
            return data
        if not isinstance(cmd, dict) or CmdKey.MANIFEST not in cmd:
            return data
        cmd[CmdKey.MANIFEST] = older
        return data[:len(data) - len(m.payload)] + cbor2.dumps(cmd)  # the payload is the tail

    return rewrite


async def test_refused_images_leave_the_running_image_and_show_the_reason(gateway,
                                                                          tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(30_000, 9), 2)
    # a manifest the operator signed long ago (seq 1): replayed by the man in the middle
    key = cc_keys.load(tmp_path / "cc-home")
    old = image_bytes(5000, 1)
    older = manifest.sign(manifest.build(seq=1, vendor=manifest.DEFAULT_VENDOR,
                                         device_class=CLASS, digest=hashlib.sha256(old).digest(),
                                         size=len(old), uri=uris.image_path(hashlib.sha256(old).digest())), key)
    tamper = await Mitm.start(gateway.device_port, flip_block_payloads)
    replay = await Mitm.start(gateway.device_port, replace_manifest(older))
    stranger = manifest.public_bytes(Ed25519PrivateKey.generate().public_key()).hex()
    expect = {"untrusted-key": "signature_invalid", "other-vendor": "wrong_class",
              "tampered": "integrity_failure", "replayed": "downgrade_refused"}
    specs = [spec(tmp_path, "untrusted-key", [stranger], version=1),
             spec(tmp_path, "other-vendor", [trust], version=1,
                  extra={"vendor": "other-vendor.example"}),
             spec(tmp_path, "tampered", [trust], version=1),
             spec(tmp_path, "replayed", [trust], version=1)]
    ports = {"tampered": tamper.port, "replayed": replay.port}
    run = start_devices(specs, gateway.device_port, ports)
    try:
        await ops.wait_registered(list(expect))
        rc, camp = await ops.upgrade(image["id"])
        status = await ops.json("status", str(camp["id"]))
    finally:
        await run.stop()
        tamper.close()
        replay.close()
    assert rc == 1
    assert tamper.rewritten > 0 and replay.rewritten > 0
    for name, result in expect.items():
        job = job_of(status, name)
        assert (job["state"], job["result"]) == ("failed", result), (name, job)
    for d in run.devices:
        a = d.agent
        assert a is not None and a.seq == 1 and a.state == 0
        assert a.slots.running() == "a" and a.slots.next_boot() == "a" and d.boots == 1
        assert Path(a.slots.path("a")).read_bytes() == FACTORY_IMAGE
    rows = {r["id"]: r for r in await ops.json("devices")}
    for name, result in expect.items():
        assert rows[name]["result"] == result and rows[name]["seq"] == 1
