"""Block2 download of one image into the inactive slot (RFC 7959 random access), resumable.

Sans-IO like the rest of the agent. Windowed (``burst.Window``, the default): the window checks
the answers and calls ``put(offset, payload)`` for each new block in any order, which writes it
at its offset, and ``advance(offset)`` when the prefix up to ``offset`` is complete.
Stop-and-wait (device/stopwait.py: ``request(f)`` names the next block, ``accept(f, response)``
checks it, writes it and says what happened) keeps that code in its own module, so a windowed
download does not hold it.

Never more than one block is held: a payload goes straight to the slot. SHA-256 runs over
the image in order, each byte once (``offset`` counts the bytes hashed): a block that arrives
in order is hashed as it comes, one that came early is read back from the slot when the gap
before it fills. Measured under the real MicroPython (docs/performance.md), holding early
blocks in RAM would cost a window's worth of heap; reading back costs one buffer, allocated
here, once. The same buffer re-hashes the slot on resume, because a SHA-256 state cannot be
saved on MicroPython.

With ``pipe`` (device/pipe.py: the manifest says the bytes sent are compressed or a delta) the
payload goes to ``pipe.write`` instead, which decodes it into the slot and hashes the image as
installed; the pipe also decides where a resumed download restarts. Bad data there is CORRUPT.
Windowed, a pipe's blocks go through ``pipe.Parked`` instead (early ones wait in a file).
"""

import hashlib

# verdicts of a download (burst.Window's and stopwait.accept's; stopwait adds its own)
RESTART = 3  # the ETag changed: the image under the URI changed, start it over
GONE = 4  # 4.04 / 4.xx: the URI names no image (result: invalid URI)
CORRUPT = 5  # more bytes than announced, or Size2 disagrees with the manifest

CONTENT = 0x45


class Fetch:
    def __init__(self, slots, uri, size, digest, block_size=1024, stage=None, pipe=None):
        self.slots = slots
        self.stage = stage  # (offset, bytes as sent, out buffer) -> bytes to install, e.g.
        # cipher.ctr(): it writes into the block buffer below, so it needs none of its own
        self.uri = uri
        self.size = size
        self.digest = digest
        szx = 0  # SZX for block_size (16..1024), rounded down to a power of two
        while szx < 6 and (16 << (szx + 1)) <= block_size:
            szx += 1
        self.szx = szx
        self.offset = 0
        self.etag = None
        self.pipe = pipe
        # a stage writes a whole block into it; reading back (``advance``) takes any size: 256
        # bytes, not a block, for a plain download (one small piece of a fragmented heap)
        self._buf = bytearray(16 << szx) if stage else bytearray(256) if pipe is None else None
        self._h = None

    def start(self, offset=0, etag=None):
        """Open the slot at ``offset`` (0: from scratch) and rebuild the hash of what is there."""
        if self.pipe is not None:  # it knows its own restart point
            self.offset = self.pipe.start(16 << self.szx)
            self.etag = etag if self.offset else None
            return
        self._h = hashlib.sha256()
        self.offset = 0
        self.advance(offset)
        self.etag = etag if self.offset else None
        self.slots.open(self.size, self.offset)

    def advance(self, upto):
        """The slot holds every byte below ``upto``: hash what is not hashed yet (read back)."""
        buf = self._buf
        mv = memoryview(buf)
        while self.offset < upto:
            n = self.slots.readinto(self.offset, mv[: min(len(buf), upto - self.offset)])
            if not n:
                break
            self._h.update(mv[:n])
            self.offset += n

    def put(self, offset, data):
        """One checked block of a windowed download, at its offset (any order, each once)."""
        if self.stage is not None:  # a stage must work at any offset (AES-CTR does)
            data = self.stage(offset, data, self._buf)
        self.slots.write_at(offset, data)
        if offset == self.offset:
            self._h.update(data)
            self.offset += len(data)

    def verified(self):
        """All bytes in, and they hash to the manifest's digest (call once, after DONE)."""
        if self.offset != self.size:
            return False
        if self.pipe is not None:
            return self.pipe.verified()
        self.slots.sync()
        return self._h.digest() == self.digest

    def close(self):
        self.slots.close()
        if self.pipe and self.pipe.parked:
            self.pipe.parked.close()
