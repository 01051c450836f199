"""The decoding pipeline of one download: bytes as sent -> decompress -> patch -> slot + SHA-256.

Used when the manifest says the bytes sent are not the image itself (COMPRESSION, DELTA_BASE).
``Pipe(slots, size, digest, compression, delta, cp)``; ``start(block)`` opens the slot where
the checkpoint ``cp`` left it, re-hashing what is already there (a SHA-256 state cannot be
saved on MicroPython), and returns the block-aligned transfer offset to download from;
``write(data)`` takes transfer bytes in order; ``verified()`` ends the transfer and compares
the SHA-256 of what reached the slot with the signed digest, exactly as for a full image.

Restart points: with compression, a deflate segment end (device/inflate.py); without, any
point. ``checkpoint()`` returns the newest one as ``{"t": transfer offset, "o": output offset,
"p": applier state or None}``: the three are taken together, the caller syncs the slot and then
persists the dict, and ``Pipe(..., cp=that)`` continues from it after a power cut. Errors in the
data raise ``ValueError`` subclasses (``PipeError``, ``InflateError``, ``PatchError``).
"""

import binascii
import hashlib

NONE = 0  # proto.keys: COMPRESSION values
DEFLATE = 1


class PipeError(ValueError):
    pass


def fetch(fetch_cls, agent, img, stage):
    """The agent's Fetch for an image whose manifest named SENT_SIZE (``img["sent"]``:
    [bytes sent, compression, delta?]), resuming from the persisted checkpoint."""
    n, comp, delta = img["sent"]
    p = Pipe(agent.slots, img["size"], binascii.unhexlify(img["digest"]), comp, delta,
             agent.s.get("cp"), lib=agent.deflate)
    f = fetch_cls(agent.slots, img["uri"], n, None, agent.block_size, stage, p)
    import gc

    path = getattr(agent.store, "path", None)  # a file system to park blocks on
    if path and not agent.stop_and_wait and (
            not hasattr(gc, "mem_free") or gc.mem_free() + gc.mem_alloc() >= WINDOW_HEAP):
        p.parked = Parked(f, path + ".park")
    return f


WINDOW_HEAP = 114688  # bytes of heap for a windowed decoded download (a delta chain on the
# unix port decodes stop-and-wait at 102k, windowed at 108k, not 106k): below, stop-and-wait


class Parked:
    """A window's sink (burst.Window: ``put``, ``advance``) in front of a Fetch with a pipe,
    which needs its input in order: a block that comes early waits in file ``path`` at its
    transfer offset modulo ``ring`` (the window's span, set by the agent): flash, not heap, and
    a cache a power cut may lose (the restart point stays the pipe's checkpoint). True from
    either: the data does not decode (CORRUPT)."""

    def __init__(self, f, path):
        self.f = f
        self.path = path
        self.file = open(path, "w+b")
        self.buf = bytearray(16 << f.szx)
        self.ring = 0

    def put(self, t, data):
        f = self.f
        if f.stage is not None:  # a stage must work at any offset (AES-CTR does)
            data = f.stage(t, data, f._buf)
        if t == f.offset:
            return self._decode(data)
        self.file.seek(t % self.ring)
        self.file.write(data)

    def advance(self, upto):
        f = self.f
        while f.offset < upto:
            mv = memoryview(self.buf)[:min(len(self.buf), upto - f.offset)]
            self.file.seek(f.offset % self.ring)
            if self.file.readinto(mv) != len(mv) or self._decode(mv):
                return True

    def _decode(self, data):
        try:
            self.f.pipe.write(data)
        except ValueError:  # pipe, inflate or patch: the data does not decode
            return True
        self.f.offset += len(data)

    def close(self):
        if self.file:
            self.file.close()
            self.file = None
            import os

            os.remove(self.path)


class _Sink:
    """The last stage: append to the slot and hash, never past the image size."""

    def __init__(self, slots, size, pos, h):
        self.slots = slots
        self.size = size
        self.pos = pos
        self.h = h

    def write(self, mv):
        if self.pos + len(mv) > self.size:
            raise PipeError("long")
        self.slots.write(mv)
        self.h.update(mv)
        self.pos += len(mv)


class Pipe:
    def __init__(self, slots, size, digest, compression=NONE, delta=False, cp=None, buf=128,
                 lib=None):
        if compression not in (NONE, DEFLATE):
            raise PipeError("compression")
        self.slots = slots
        self.size = size
        self.digest = digest
        self.compression = compression
        self.delta = delta
        self.cp = cp
        self.fresh = None  # newest restart point not yet handed out by checkpoint()
        self.bufsize = buf
        self.lib = lib  # the deflate module, where the port has none built in (CPython)
        self.t = 0  # transfer bytes consumed (counted here only without compression)
        self.sink = None
        self.patch = None
        self.inflate = None
        self.head = None
        self.parked = None  # the window's sink (Parked), when the download may be windowed

    def start(self, block):
        cp = self.cp or {"t": 0, "o": 0, "p": None}
        t, o = cp["t"], cp["o"]
        if not (0 <= o <= self.size and t >= 0):
            raise PipeError("checkpoint")
        h = hashlib.sha256()
        if o:
            buf = bytearray(self.bufsize)
            mv = memoryview(buf)
            done = 0
            while done < o:
                n = self.slots.readinto(done, mv[:min(len(buf), o - done)])
                if not n:
                    raise PipeError("slot")
                h.update(mv[:n])
                done += n
            buf = mv = None
        self.slots.open(self.size, o)
        self.sink = _Sink(self.slots, self.size, o, h)
        head = self.sink
        if self.delta:
            from .patch import Patch

            # reads are bounded by the slot size; past the image, read_running returns short
            self.patch = Patch(head, self.slots.read_running, self.slots.capacity(),
                               self.size, cp["p"], self.bufsize)
            head = self.patch
        aligned = t - t % block
        if self.compression == DEFLATE:
            from .inflate import Inflate

            self.inflate = Inflate(head, t, t - aligned, self._mark, self.lib)
            head = self.inflate
        self.t = aligned
        self.skip = t - aligned
        self.head = head
        return aligned

    def _mark(self, t):
        self.fresh = {"t": t, "o": self.sink.pos,
                      "p": self.patch.state() if self.patch is not None else None}

    def write(self, data):
        if self.inflate is None and self.skip:  # resumed inside a block
            k = min(self.skip, len(data))
            self.skip -= k
            self.t += k
            data = memoryview(data)[k:]
        self.head.write(data)
        if self.inflate is None:
            self.t += len(data)
            self._mark(self.t)

    def checkpoint(self):
        """The newest restart point since the last call, or None."""
        cp = self.fresh
        self.fresh = None
        return cp

    def due(self, state, every):
        """If the newest restart point is ``every`` bytes (of transfer or of image) past the
        persisted one (``state["cp"]``), put it there for the agent to persist and return its
        transfer offset; else None."""
        cp = self.checkpoint()
        last = state.get("cp")
        if cp is not None and (last is None or cp["t"] - last["t"] >= every
                               or cp["o"] - last["o"] >= every):
            state["cp"] = cp
            return cp["t"]
        return None

    def verified(self):
        try:
            if self.inflate is not None:
                self.inflate.finish()
            if self.patch is not None and not self.patch.done():
                raise PipeError("patch end")
        except ValueError:
            return False
        if self.sink.pos != self.size:
            return False
        self.slots.sync()
        return self.sink.h.digest() == self.digest
