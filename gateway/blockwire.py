"""The byte-level fast path for the one request that dominates the gateway's load: a plain
``GET f/<image id>`` with an optional Block2.

Measured on 2 cores: aiocoap's ``Message.decode`` + option objects + ``Message.encode`` cost
about 110 µs of the ~200 µs a block took even after bypassing Site and the MessageManager.
This module reads exactly that request shape from the datagram and writes the 2.05 response
bytes (ETag, Block2, Size2, payload) directly. Anything else — another option, a payload, a
malformed header, an error answer — returns None and goes through aiocoap as usual, so
aiocoap stays the authority on CoAP; this is only a shortcut for the well-formed common case,
checked against aiocoap's decoder and libcoap's client in the tests.
"""

from __future__ import annotations

from proto import uris

CON, NON, ACK = 0, 1, 2
GET = 0x01
CONTENT = 0x45
OPT_ETAG, OPT_URI_HOST, OPT_URI_PORT, OPT_URI_PATH = 4, 3, 7, 11
OPT_BLOCK2, OPT_SIZE2 = 23, 28
_IGNORABLE = (OPT_URI_HOST, OPT_URI_PORT, OPT_SIZE2, OPT_ETAG)  # we are the only host; we
# always send Size2; a request ETag only allows a 2.03 we may skip (RFC 7252 5.10.6)
_FW = uris.FIRMWARE.encode()


def parse_block_get(d: bytes) -> tuple[int, int, bytes, str, int, int] | None:
    """(mtype, mid, token, image id, block number, szx) of a CON/NON ``GET f/<id>``, or None."""
    n = len(d)
    if n < 4:
        return None
    b0 = d[0]
    tkl = b0 & 0x0F
    mtype = (b0 >> 4) & 0x03
    if b0 >> 6 != 1 or tkl > 8 or d[1] != GET or mtype > NON:
        return None
    i = 4 + tkl
    if i > n:
        return None
    token = d[4:i]
    opt = 0
    path: list[bytes] = []
    block2 = None
    while i < n:
        b = d[i]
        if b == 0xFF:
            return None  # a GET with a payload: let aiocoap judge it
        i += 1
        delta, length = b >> 4, b & 0x0F
        if delta == 13:
            if i >= n:
                return None
            delta = d[i] + 13
            i += 1
        elif delta == 14:
            if i + 1 >= n:
                return None
            delta = (d[i] << 8 | d[i + 1]) + 269
            i += 2
        elif delta == 15:
            return None
        if length == 13:
            if i >= n:
                return None
            length = d[i] + 13
            i += 1
        elif length >= 14:
            return None  # no option of this request is that long
        opt += delta
        value = d[i:i + length]
        i += length
        if len(value) != length:
            return None
        if opt == OPT_URI_PATH:
            path.append(value)
        elif opt == OPT_BLOCK2:
            if length > 3:
                return None
            block2 = int.from_bytes(value, "big")
        elif opt not in _IGNORABLE:
            return None
    if len(path) != 2 or path[0] != _FW:
        return None
    try:
        image_id = path[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    if block2 is None:
        return mtype, (d[2] << 8) | d[3], token, image_id, 0, 6
    szx = block2 & 0x07
    if szx == 7:
        return None
    return mtype, (d[2] << 8) | d[3], token, image_id, block2 >> 4, szx


def _uint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def encode_block_response(mtype: int, mid: int, token: bytes, etag: bytes, num: int, more: bool,
                          szx: int, size: int, payload: bytes) -> bytes:
    """ACK (to a CON) or NON 2.05 with ETag, Block2 and Size2, options in ascending order."""
    b2 = _uint((num << 4) | (0x08 if more else 0) | szx)
    s2 = _uint(size)
    return b"".join((
        bytes((0x40 | (mtype << 4) | len(token), CONTENT, mid >> 8, mid & 0xFF)), token,
        bytes((0x40 | len(etag),)), etag,  # ETag: delta 4 (len <= 8)
        bytes((0xD0 | len(b2), OPT_BLOCK2 - OPT_ETAG - 13)), b2,  # Block2: delta 19
        bytes(((OPT_SIZE2 - OPT_BLOCK2) << 4 | len(s2),)), s2,  # Size2: delta 5
        b"\xff" if payload else b"", payload,
    ))
