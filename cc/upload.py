"""Block1 upload (RFC 7959) of an image, driven here block by block.

aiocoap's own Block1 client gives no progress and gives up on the first lost block; driving it
here lets the operator watch a bar, retries one block on a timeout instead of the whole image,
and never holds the image in memory (each block is read from the file when it is sent).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from aiocoap import PUT
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from proto import uris

from .client import ControlClient, NoAnswer, check
from .errors import CcError

BLOCK_SZX = 6  # 1024-byte blocks
BLOCK_RETRIES = 3  # extra attempts per block after a timeout (not for the first block)
OCTET_STREAM = 42  # Content-Format of the image bytes


async def upload(client: ControlClient, file: Path, digest_hex: str, size: int,
                 progress: Callable[[int], None] = lambda done: None) -> dict[str, Any]:
    """PUT blob/<digest> from ``file``; returns the gateway's {"digest", "size"}."""
    path = f"{uris.BLOB}/{digest_hex}"
    szx = BLOCK_SZX
    offset = 0
    restarted = False
    with open(file, "rb") as f:
        while True:
            block_size = 1 << (szx + 4)
            f.seek(offset)
            chunk = f.read(block_size)
            more = offset + len(chunk) < size
            num = offset // block_size
            response = await _send_block(client, path, chunk, num, more, szx, size)
            if response.code == Code.REQUEST_ENTITY_INCOMPLETE and offset and not restarted:
                # The gateway lost the partial upload (it restarted): start once more from zero.
                offset, szx, restarted = 0, BLOCK_SZX, True
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
                      szx: int, size: int):
    attempts = 1 if num == 0 else 1 + BLOCK_RETRIES
    for attempt in range(attempts):
        msg = client.message(PUT, path, chunk,
                             block1=BlockOption.BlockwiseTuple(num, more, szx), size1=size)
        msg.opt.content_format = OCTET_STREAM
        try:
            return await client.exchange(msg)
        except NoAnswer:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


def _decode(payload: bytes, path: str) -> dict[str, Any]:
    try:
        body = cbor2.loads(payload) if payload else {}
    except Exception as e:
        raise CcError(f"gateway sent a response to {path} that is not CBOR: {e}") from None
    if not isinstance(body, dict):
        raise CcError(f"gateway sent an unexpected answer to {path}: {body!r}")
    return body
