"""Apply a delta while it streams in (manifest DELTA_BASE): read the running image, write the new.

The delta is a detools sequential patch (bsdiff algorithm) re-encoded by the gateway
(gateway/deltas.py) so that runs of unchanged bytes are ops, not zeros: deflate then packs it
about as tight as bsdiff4's bzip2. Decoded stream::

    0xD1, uvarint target size, then ops (a tag byte, then a uvarint n):
      1 COPY n           n bytes of the base from the read position (read position += n)
      2 ADD n, n bytes   base byte + patch byte, mod 256            (read position += n)
      3 INSERT n, n bytes new bytes
      4 SEEK z           read position += z (zigzag-coded: 0, -1, 1, -2, ...)
      0 END              the output is exactly the target size and nothing follows

Sans-IO and push-driven: ``write(data)`` takes patch bytes in any pieces and writes output to
``out.write``; ``read_base(offset, buf)`` fills ``buf`` from the running image. Every read
and write is checked against the base size and the target size first, so no patch, however
made, reads or writes outside the slots: it fails with ``PatchError``. The whole parser state
is seven integers (``state()``), persisted with the transfer and output offsets so that an
apply resumes after a power cut. Heap: one buffer of ``buf`` bytes.
"""

MAGIC = 0xD1
END = 0
COPY = 1
ADD = 2
INSERT = 3
SEEK = 4

_MAGIC = 0  # parser phases
_TAG = 1
_NUM = 2
_DATA = 3
_DONE = 4

_HEADER = -1  # "tag" of the target size number in the header
MAX_SHIFT = 35  # uvarints of at most 5 bytes (32 GiB): longer is an error, not a big int


class PatchError(ValueError):
    pass


class Patch:
    def __init__(self, out, read_base, base_size, size, state=None, buf=256):
        self.out = out
        self.read_base = read_base
        self.base_size = base_size
        self.size = size
        self.buf = bytearray(buf)
        if state is None:
            state = [_MAGIC, 0, 0, 0, 0, 0, 0]
        self.ph, self.tag, self.acc, self.shift, self.rem, self.frm, self.pos = state

    def state(self):
        return [self.ph, self.tag, self.acc, self.shift, self.rem, self.frm, self.pos]

    def done(self):
        return self.ph == _DONE

    def write(self, data):
        mv = memoryview(data)
        n = len(mv)
        i = 0
        while i < n:
            ph = self.ph
            if ph == _DATA:
                k = min(self.rem, n - i)
                if self.tag == ADD:
                    self._add(mv[i:i + k])
                else:
                    self.out.write(mv[i:i + k])
                    self.pos += k
                i += k
                self.rem -= k
                if not self.rem:
                    self.ph = _TAG
                continue
            b = mv[i]
            i += 1
            if ph == _NUM:
                if self.shift > MAX_SHIFT:
                    raise PatchError("long number")
                self.acc |= (b & 0x7F) << self.shift
                self.shift += 7
                if not b & 0x80:
                    self._op(self.acc)
            elif ph == _TAG:
                if b == END:
                    if self.pos != self.size:
                        raise PatchError("short")
                    self.ph = _DONE
                elif COPY <= b <= SEEK:
                    self._number(b)
                else:
                    raise PatchError("op")
            elif ph == _MAGIC:
                if b != MAGIC:
                    raise PatchError("magic")
                self._number(_HEADER)
            else:
                raise PatchError("trailing")

    def _number(self, tag):
        self.tag = tag
        self.acc = 0
        self.shift = 0
        self.ph = _NUM

    def _op(self, n):
        tag = self.tag
        self.ph = _TAG
        if tag == _HEADER:
            if n != self.size:
                raise PatchError("size")
            return
        if tag == SEEK:
            frm = self.frm + ((n >> 1) ^ -(n & 1))
            if not 0 <= frm <= self.base_size:
                raise PatchError("seek")
            self.frm = frm
            return
        if self.pos + n > self.size:
            raise PatchError("long")
        if tag != INSERT and self.frm + n > self.base_size:
            raise PatchError("base")
        if tag == COPY:
            self._copy(n)
        elif n:
            self.rem = n
            self.ph = _DATA

    def _base(self, k):
        mv = memoryview(self.buf)[:k]
        if self.read_base(self.frm, mv) != k:
            raise PatchError("base read")
        self.frm += k
        return mv

    def _copy(self, n):
        while n:
            k = min(n, len(self.buf))
            self.out.write(self._base(k))
            self.pos += k
            n -= k

    def _add(self, mv):
        i = 0
        n = len(mv)
        while i < n:
            k = min(n - i, len(self.buf))
            b = self._base(k)
            for j in range(k):
                b[j] = (b[j] + mv[i + j]) & 0xFF
            self.out.write(b)
            self.pos += k
            i += k
