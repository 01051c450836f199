"""Worked examples of every message, made from the contract itself.

``docs/protocol.md`` embeds the output of ``python -m proto.examples``; a test regenerates it and
fails when the two drift apart, so the hex in the docs is always what the code sends.
"""

from __future__ import annotations

import hashlib
import warnings

import cbor2
from aiocoap import ACK, CHANGED, CON, CONTENT, GET, POST, Message
from aiocoap.optiontypes import BlockOption
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import manifest, uris
from .codes import Op, Result, State
from .keys import CmdKey, ReportKey

CBOR_FORMAT = 60  # application/cbor
# A fixed, published example key: never trust it on a real device.
EXAMPLE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fota example key").digest())
EXAMPLE_IMAGE = bytes(range(256)) * 4


def _coap(mtype, code, mid: int, token: bytes, payload: bytes = b"", **opts) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        m = Message(code=code, payload=payload, **opts)
        m.mtype, m.mid, m.token = mtype, mid, token
    return m.encode()


def examples() -> list[tuple[str, bytes]]:
    digest = hashlib.sha256(EXAMPLE_IMAGE).digest()
    signed = manifest.sign(
        manifest.build(seq=2, vendor=manifest.DEFAULT_VENDOR, device_class="esp32-demo",
                       digest=digest, size=len(EXAMPLE_IMAGE), uri=uris.image_path(digest)),
        EXAMPLE_KEY,
    )
    report = cbor2.dumps({ReportKey.ID: "dev-1", ReportKey.CLASS: "esp32-demo", ReportKey.SEQ: 1,
                          ReportKey.STATE: State.IDLE, ReportKey.RESULT: Result.INITIAL})
    command = cbor2.dumps({CmdKey.OP: Op.UPDATE, CmdKey.JOB: 7, CmdKey.MANIFEST: signed})
    progress = cbor2.dumps({ReportKey.ID: "dev-1", ReportKey.CLASS: "esp32-demo", ReportKey.SEQ: 1,
                            ReportKey.STATE: State.DOWNLOADING, ReportKey.RESULT: Result.INITIAL,
                            ReportKey.PROGRESS: 512, ReportKey.JOB: 7,
                            ReportKey.SIZE: len(EXAMPLE_IMAGE), ReportKey.TARGET: 2})
    success = cbor2.dumps({ReportKey.ID: "dev-1", ReportKey.CLASS: "esp32-demo", ReportKey.SEQ: 2,
                           ReportKey.STATE: State.IDLE, ReportKey.RESULT: Result.SUCCESS,
                           ReportKey.JOB: 7})
    image_id = uris.image_id(digest)
    return [
        ("report payload (CBOR): idle, running seq 1", report),
        ("report datagram: CON POST /r, Content-Format 60", _coap(CON, POST, 0x1234, b"\x0a\x0b\x0c\x0d", report, uri_path=(uris.REPORT,), content_format=CBOR_FORMAT)),
        ("signed manifest (COSE_Sign1, tag 18) for a 1 KiB image, seq 2", signed),
        ("command payload (CBOR): update, job 7, manifest", command),
        ("response datagram: piggybacked ACK 2.04 carrying the command", _coap(ACK, CHANGED, 0x1234, b"\x0a\x0b\x0c\x0d", command, content_format=CBOR_FORMAT)),
        ("response datagram: ACK 2.04, nothing to do (empty payload)", _coap(ACK, CHANGED, 0x1234, b"\x0a\x0b\x0c\x0d")),
        ("block request: CON GET /f/<id>, Block2 num 1, 512 bytes (SZX 5)", _coap(CON, GET, 0x1235, b"\x0e", uri_path=(uris.FIRMWARE, image_id), block2=BlockOption.BlockwiseTuple(1, 0, 5))),
        ("block response: ACK 2.05, ETag, Block2 num 1 more 0 SZX 5, Size2 1024 (payload elided)", _coap(ACK, CONTENT, 0x1235, b"\x0e", b"", etag=uris.etag(digest), block2=BlockOption.BlockwiseTuple(1, 0, 5), size2=1024)),
        ("progress report payload: downloading job 7, 512 of 1024 bytes", progress),
        ("success report payload: idle, result success, running seq 2, job 7", success),
    ]


def render() -> str:
    out = []
    for title, data in examples():
        out.append(f"{title} ({len(data)} bytes):\n")
        out.append("```\n")
        h = data.hex()
        for i in range(0, len(h), 64):
            out.append(h[i:i + 64] + "\n")
        out.append("```\n\n")
    return "".join(out)


if __name__ == "__main__":
    print(render(), end="")
