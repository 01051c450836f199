"""Decompress a transfer while it streams in (manifest COMPRESSION 1), restartable at segments.

The transfer is a concatenation of raw deflate streams ("segments", window at most 4 KiB:
wbits 12), each ending with a final block, each starting with an empty history. The gateway
cuts a segment every 32 KiB of output, so a segment end is a point where no decoder state is
needed: ``checkpoint()`` reports the transfer offset there, and after a power cut decoding
restarts from it (the built-in decoder's state cannot be saved); ``on_segment`` is told each.

MicroPython's ``deflate.DeflateIO`` pulls its input one byte at a time from a stream, and
raises ``EOFError`` if the stream runs dry mid-block (its state is then lost). Bytes arrive
pushed, one block at a time, so ``write`` only asks for output while at least ``RESERVE``
input bytes wait (more than 64 output bytes can need from a zlib-made stream: at most 132
bytes of codes plus one dynamic block header of at most 286), and ``finish`` drains the rest.
A stream that needs more fails with ``InflateError``, never a crash; proto/packing.py runs
this very decoder over every transfer it makes, so what the gateway sends always decodes.

Heap, measured on the unix port: ``DeflateIO`` 5.4 KiB (the 4 KiB window and the decoder's
tables, allocated per segment), the input buffer of ``RESERVE`` + ``CHUNK`` bytes, one
``STEP``-byte output buffer.
"""

import io


WBITS = 12  # 4 KiB window: measured ~2 % larger output than 32 KiB, an eighth of the heap
RESERVE = 512
STEP = 64
CHUNK = 128  # input taken per step: the input buffer is RESERVE + CHUNK bytes


try:
    import deflate as _builtin
except ImportError:  # CPython (the simulator, tests): sim/hostdeflate.py, passed as ``lib``
    _builtin = None


class InflateError(ValueError):
    pass


class _Feed(io.IOBase):
    """The decoder's input: the bytes of ``buf[pos:end]`` (a plain buffer, no copies)."""

    def __init__(self, size):
        self.buf = bytearray(size)
        self.pos = 0
        self.end = 0
        self.taken = 0  # bytes handed to the decoder in total

    def readinto(self, b):
        n = min(len(b), self.end - self.pos)
        if n == 1:  # DeflateIO reads one byte at a time: no slice object per byte
            b[0] = self.buf[self.pos]
        elif n:
            b[:n] = self.buf[self.pos:self.pos + n]
        if n:
            self.pos += n
            self.taken += n
        return n

    def add(self, mv):
        """Append as much of ``mv`` as fits; return how many bytes were taken."""
        if self.pos:
            left = self.end - self.pos
            self.buf[:left] = self.buf[self.pos:self.end]
            self.pos = 0
            self.end = left
        n = min(len(mv), len(self.buf) - self.end)
        self.buf[self.end:self.end + n] = mv[:n]
        self.end += n
        return n


class Inflate:
    """``write(data)`` compressed bytes in order; decompressed bytes go to ``out.write``.

    ``offset`` is the transfer offset of the first byte that will be written (a segment start,
    from a checkpoint); ``skip`` bytes of the first writes are dropped (the caller resumed at
    the block holding that offset).
    """

    def __init__(self, out, offset=0, skip=0, on_segment=None, lib=None):
        self.lib = lib or _builtin
        if self.lib is None:
            raise InflateError("no deflate")
        self.out = out
        self.feed = _Feed(RESERVE + CHUNK)
        self.base = offset  # transfer offset of feed.taken == 0
        self.skip = skip
        self.dec = None
        self.obuf = bytearray(STEP)
        self.on_segment = on_segment  # called with the transfer offset of each segment end

    def write(self, data):
        mv = memoryview(data)
        if self.skip:
            k = min(self.skip, len(mv))
            self.skip -= k
            mv = mv[k:]
        while len(mv):
            n = self.feed.add(mv)
            mv = mv[n:]
            self._drain(RESERVE)

    def finish(self):
        """The whole transfer is in: decode the rest; it must end exactly at a segment end."""
        self._drain(0)
        while self.dec is not None:  # all input taken: the decoder must still reach its end
            self._step()  # (output is bounded by the sink, a lack of input raises)
        if self.dec is not None or self.feed.end != self.feed.pos:
            raise InflateError("truncated")

    def _drain(self, reserve):
        feed = self.feed
        while feed.end - feed.pos > reserve:
            self._step()

    def _step(self):
        if self.dec is None:
            self.dec = self.lib.DeflateIO(self.feed, self.lib.RAW, WBITS)
        try:
            n = self.dec.readinto(self.obuf)
        except (OSError, EOFError, ValueError, IndexError):
            raise InflateError("bad data")
        if n:
            self.out.write(memoryview(self.obuf)[:n])
        else:
            self.dec = None  # a segment ended: nothing of it is needed any more
            if self.on_segment is not None:
                self.on_segment(self.base + self.feed.taken)
