"""Gateway-side refusals of the threat model (docs/threat-model.md) not covered elsewhere: the
control API is not reachable through the device bind, and the gateway will not pair a manifest
with an image it does not describe. Each is refused with a reason and stores nothing."""

from __future__ import annotations

import hashlib
import os

import cbor2
from aiocoap import GET, POST, PUT, Message
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import control, publish_image

from proto import manifest, uris

KEY = Ed25519PrivateKey.generate()


async def test_device_bind_has_no_control_api(gateway, coap_client) -> None:
    """Whoever reaches the device port (any device, anyone on its network) finds no control
    resource there: enrolment, images, campaigns and uploads answer 4.04."""
    img = await publish_image(coap_client, gateway, os.urandom(2000), KEY, seq=2,
                              device_class="c")
    before = gateway.row_counts()
    digest = hashlib.sha256(b"x").hexdigest()
    for code, path, body in [
        (POST, "dev", {"id": "evil", "class": "c"}),
        (POST, "camp", {"image": img["id"], "all": True}),
        (POST, "fw", {"manifest": b"", "class": "c", "vendor": "v"}),
        (GET, "dev", None),
        (GET, "ev", None),
        (POST, "camp/1/cancel", None),
        (PUT, f"blob/{digest}", None),
    ]:
        payload = b"x" if body is None else cbor2.dumps(body)
        resp = await coap_client.request(Message(code=code, uri=f"{gateway.device_uri}/{path}",
                                                 payload=payload)).response
        assert resp.code.dotted in ("4.04", "4.05"), (path, resp.code, resp.payload)
    assert gateway.row_counts() == before


async def test_manifest_must_describe_the_stored_image(gateway, coap_client) -> None:
    """A manifest for image A next to the bytes of image B (same size), a manifest whose class
    id is not the class it is registered for: 4.00 with the reason, nothing registered."""
    ctx, gw = coap_client, gateway
    a, b = os.urandom(1500), os.urandom(1500)
    resp = await ctx.request(Message(code=PUT, uri=f"{gw.control_uri}/blob/"
                                     f"{hashlib.sha256(b).hexdigest()}", payload=b)).response
    assert resp.code.dotted == "2.04"
    before = gw.row_counts()
    digest_a = hashlib.sha256(a).digest()
    swapped = manifest.sign(manifest.build(seq=3, vendor=manifest.DEFAULT_VENDOR,
                                           device_class="c", digest=digest_a, size=len(a),
                                           uri=uris.image_path(digest_a)), KEY)
    code, text = await control(ctx, gw, "POST", "fw", {"manifest": swapped, "class": "c",
                                                       "vendor": manifest.DEFAULT_VENDOR})
    assert code == "4.00" and "no blob with the manifest's digest" in text
    digest_b = hashlib.sha256(b).digest()
    other_class = manifest.sign(manifest.build(seq=3, vendor=manifest.DEFAULT_VENDOR,
                                               device_class="other", digest=digest_b,
                                               size=len(b), uri=uris.image_path(digest_b)), KEY)
    code, text = await control(ctx, gw, "POST", "fw", {"manifest": other_class, "class": "c",
                                                       "vendor": manifest.DEFAULT_VENDOR})
    assert code == "4.00" and "class id is not that of 'c'" in text
    assert gw.row_counts() == before
