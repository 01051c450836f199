"""How the bytes sent are packed (issue 12): deflate segments and the delta op stream.

Compression.DEFLATE: raw deflate streams ("segments") one after another, each with its own
final block and an empty history, window 4 KiB (``WBITS`` 12: the device allocates the window;
on the ~300 KiB ELF of docs/performance.md 12 bits cost ~2 % against 15, 10 bits cost ~9 %).
A segment ends once it covers ``SEGMENT_OUT`` bytes of output: that is where a device can
restart decoding after a power cut (device/inflate.py), so it bounds what is fetched again.

The delta op stream is what device/patch.py applies (its docstring has the format); the
gateway makes it from a detools patch (gateway/deltas.py). Both decoders here are the
reference the tests and benchmarks use; the device has its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

WBITS = 12
LEVEL = 9
SEGMENT_OUT = 32 * 1024  # a full image: restart points every 32 KiB of image
SEGMENT_OUT_DELTA = 256 * 1024  # a delta: every 256 KiB of image (a segment costs ~100-200 bytes)
SEGMENT_IN = 64 * 1024  # and never more than this much decoded input in one segment

MAGIC = 0xD1
END, COPY, ADD, INSERT, SEEK = range(5)


class PackingError(ValueError):
    pass


def deflate_segments(pieces: Iterable[tuple[bytes, int]], segment_out: int = SEGMENT_OUT) -> bytes:
    """Deflate ``pieces`` ((bytes, output bytes they make)) into segments; returns the transfer."""
    out = bytearray()
    co = None
    covered = fed = 0
    for data, makes in pieces:
        if co is None:
            co = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS, 9)
        out += co.compress(data)
        covered += makes
        fed += len(data)
        if covered >= segment_out or fed >= SEGMENT_IN:
            out += co.flush()
            co = None
            covered = fed = 0
    if co is not None:
        out += co.flush()
    return bytes(out)


def compress_image(image: bytes) -> bytes:
    sent = deflate_segments(((image[i:i + 4096], len(image[i:i + 4096]))
                             for i in range(0, len(image), 4096)))
    check_streamable(sent, len(image))
    return sent


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def write(self, mv: memoryview) -> None:
        self.n += len(mv)


def check_streamable(sent: bytes, size: int) -> None:
    """Run the device's own decoder (device/inflate.py, the same one-byte-at-a-time input
    contract as MicroPython's) over ``sent`` in 1 KiB blocks: what it cannot decode within
    its input reserve is never offered."""
    from device.inflate import Inflate, InflateError
    from sim import hostdeflate

    out = _Count()
    dec = Inflate(out, lib=hostdeflate)
    try:
        for i in range(0, len(sent), 1024):
            dec.write(sent[i:i + 1024])
        dec.finish()
    except InflateError as e:
        raise PackingError(f"a device could not stream this: {e}") from None
    if out.n != size:
        raise PackingError(f"decodes to {out.n} bytes, not {size}")


# -- the delta op stream --------------------------------------------------------------------

def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def encode_ops(size: int, ops: Iterable[tuple[int, int | bytes]]) -> Iterator[tuple[bytes, int]]:
    """Serialise ops ((COPY, n), (ADD, bytes), (INSERT, bytes), (SEEK, delta)) as
    (bytes, output bytes they make) pieces, header first and END last."""
    yield bytes([MAGIC]) + uvarint(size), 0
    for op, arg in ops:
        if op == COPY:
            yield bytes([COPY]) + uvarint(arg), arg
        elif op in (ADD, INSERT):
            yield bytes([op]) + uvarint(len(arg)) + arg, len(arg)
        elif op == SEEK:
            yield bytes([SEEK]) + uvarint(zigzag(arg)), 0
        else:
            raise PackingError(f"unknown op {op}")
    yield bytes([END]), 0


def split_diff(diff: bytes, min_run: int = 2) -> Iterator[tuple[int, int | bytes]]:
    """bsdiff's diff bytes as COPY (runs of zeros: the base byte unchanged) and ADD ops."""
    i, n = 0, len(diff)
    while i < n:
        j = i
        while j < n and diff[j] == 0:
            j += 1
        if j - i >= min_run or j == n:
            yield COPY, j - i
            i = j
            continue
        k = j  # a literal stretch: up to the next zero run of at least min_run
        while k < n:
            if diff[k] == 0:
                r = k
                while r < n and diff[r] == 0 and r - k < min_run:
                    r += 1
                if r - k >= min_run:
                    break
                k = r
            else:
                k += 1
        yield ADD, diff[i:k]
        i = k
