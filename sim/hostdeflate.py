"""MicroPython's ``deflate`` module for CPython (the simulator, tests, the gateway's check).

device/inflate.py needs exactly ``DeflateIO(stream, RAW, wbits).readinto(buf)`` with
MicroPython's input contract: the decoder pulls its input one byte at a time from ``stream``
(so it consumes exactly one raw deflate stream and not a byte more), raises ``EOFError`` when
the stream runs dry mid-stream, ``OSError`` on bad data (also a distance beyond the window),
and returns 0 at the end of the stream. Built on ``zlib``; passed as the agent config key
``deflate`` (and to ``Pipe``/``Inflate`` as ``lib``), as sim/hostaes.py is for ``aes``.
"""

from __future__ import annotations

import zlib
from typing import Any

RAW = -1


class DeflateIO:
    def __init__(self, stream: Any, fmt: int, wbits: int) -> None:
        if fmt != RAW:
            raise ValueError("only RAW here")
        self.s = stream
        self.d = zlib.decompressobj(-wbits)
        self.pend = b""
        self.one = bytearray(1)

    def readinto(self, buf: Any) -> int:
        while not self.pend:
            if self.d.eof:
                return 0
            if not self.s.readinto(self.one):
                raise EOFError
            try:
                self.pend = self.d.decompress(bytes(self.one))
            except zlib.error:
                raise OSError(22, "bad deflate data") from None
        n = min(len(buf), len(self.pend))
        buf[:n] = self.pend[:n]
        self.pend = self.pend[n:]
        return n
