"""The protocol-level fleet simulator against the real gateway: its devices register, take a
campaign with failures and mid-download reboots, and its counts agree with the gateway's."""

from __future__ import annotations

import asyncio
import hashlib
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import control, publish_image

from sim import fleetsim

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fleetsim test key").digest())
N = 30


async def test_fleetsim_campaign_counts_agree_with_the_gateway(gateway, coap_client):
    img = await publish_image(coap_client, gateway, os.urandom(2500), KEY, seq=2,
                              device_class="fs")
    trust = KEY.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw).hex()
    args = fleetsim.parser().parse_args([
        "--gateway", gateway.device_uri, "-n", str(N), "--class", "fs", "--until-seq", "2",
        "--trust", trust, "--wake", "0.5", "--spread", "0.5", "--fail", "0.2", "--reboot", "0.3",
        "--reboot-delay", "0.2", "--duration", "60", "--seed", "7"])

    async def start_campaign():
        for _ in range(200):  # bounded: the devices register within --spread
            code, rows = await control(coap_client, gateway, "GET", "dev")
            if len(rows) == N:
                break
            await asyncio.sleep(0.1)
        code, body = await control(coap_client, gateway, "POST", "camp",
                                   {"image": img["id"], "class": "fs", "timeout": 120})
        assert code == "2.01", body

    starter = asyncio.ensure_future(start_campaign())
    fleet = await fleetsim.run(args)
    await starter
    s = fleet.stats
    assert fleet.finished() and s.timeouts == 0 and s.errors == 0
    assert s.failed > 0 and s.reboots > 0  # the seed gives both
    code, camp = await control(coap_client, gateway, "GET", "camp/1")
    assert camp["state"] == "done"
    assert camp["counts"] == {"succeeded": fleet.done, "failed": len(fleet.failed)}
    assert fleet.done + len(fleet.failed) == N
    assert s.blocks >= 3 * N  # every device fetched the 3 blocks (a failure is decided after)
