"""Block1 upload (RFC 7959) of an image, driven here block by block.

aiocoap's own Block1 client gives no progress and gives up on the first lost block; driving it
here lets the operator watch a bar, retries one block through a short outage instead of the
whole image, starts over when the gateway lost the partial upload (4.08 after its restart), and
never holds the image in memory (each block is read from the file when it is sent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from aiocoap import PUT, Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from proto import uris

from .client import ControlClient, NoAnswer, Unreachable, check
from .errors import CcError

BLOCK_SZX = 6  # 1024-byte blocks
OUTAGE_LIMIT = 15.0  # seconds a block after the first may go unanswered (a gateway restart)
REFUSED_PAUSE = 0.5  # seconds between attempts while the gateway refuses (it is restarting)
MAX_RESTARTS = 3  # times the gateway may lose a partial upload (4.08) before we give up
OCTET_STREAM = 42  # Content-Format of the image bytes


async def upload(client: ControlClient, file: Path, digest_hex: str, size: int,
                 progress: Callable[[int], None] = lambda done: None) -> dict[str, Any]:
    """PUT blob/<digest> from ``file``; returns the gateway's {"digest", "size"}."""
    path = f"{uris.BLOB}/{digest_hex}"
    szx = BLOCK_SZX
    offset = 0
    restarts = 0
    heard = False  # no answer yet: the gateway may not be there at all, so fail fast
    with open(file, "rb") as f:
        while True:
            block_size = 1 << (szx + 4)
            f.seek(offset)
            chunk = f.read(block_size)
            more = offset + len(chunk) < size
            num = offset // block_size
            response = await _send_block(client, path, chunk, num, more, szx, size,
                                         retry=heard)
            heard = True
            if (response.code == Code.REQUEST_ENTITY_INCOMPLETE and offset
                    and restarts < MAX_RESTARTS):
                # The gateway lost the partial upload (it restarted, or a retried block arrived
                # twice): start again from zero, a bounded number of times.
                offset, szx, restarts = 0, BLOCK_SZX, restarts + 1
                progress(0)
                continue
            check(response, path)
            offset += len(chunk)
            progress(offset)
            if not more:
                if response.code == Code.CONTINUE:
                    raise CcError(f"gateway answered 2.31 Continue to the last block of {path}")
                return _decode(response.payload, path)
            if response.code != Code.CONTINUE:
                raise CcError(f"gateway ended the upload of {path} early with "
                              f"{response.code.dotted} at byte {offset} of {size}")
            echoed = response.opt.block1
            if echoed is not None and echoed.size_exponent < szx:
                szx = echoed.size_exponent  # the gateway asked for smaller blocks (RFC 7959 2.3)


async def _send_block(client: ControlClient, path: str, chunk: bytes, num: int, more: bool,
                      szx: int, size: int, *, retry: bool) -> Message:
    """Send one block. Until the gateway first answers it gets one try (nobody there: say so
    within seconds); after that blocks are retried for OUTAGE_LIMIT seconds, as the gateway was
    there a moment ago (even block 0 when starting over after a restart)."""
    give_up = time.monotonic() + OUTAGE_LIMIT
    while True:
        msg = client.message(PUT, path, chunk,
                             block1=BlockOption.BlockwiseTuple(num, more, szx), size1=size)
        msg.opt.content_format = OCTET_STREAM
        try:
            return await client.exchange(msg)
        except Unreachable as e:
            if not retry or time.monotonic() >= give_up:
                raise
            if not isinstance(e, NoAnswer):
                await asyncio.sleep(REFUSED_PAUSE)


def _decode(payload: bytes, path: str) -> dict[str, Any]:
    try:
        body = cbor2.loads(payload) if payload else {}
    except Exception as e:
        raise CcError(f"gateway sent a response to {path} that is not CBOR: {e}") from None
    if not isinstance(body, dict):
        raise CcError(f"gateway sent an unexpected answer to {path}: {body!r}")
    return body
