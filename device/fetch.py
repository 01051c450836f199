"""Block2 download of one image into the inactive slot (RFC 7959 random access), resumable.

Sans-IO like the rest of the agent. Stop-and-wait: ``request()`` names the next block,
``accept(response)`` checks it, writes it and says what happened; the caller decides about
retries, persistence and reports. Windowed (``burst.Window``): the window checks the answers
and calls ``put(offset, payload)`` for each new block in any order, which writes it at its
offset, and ``advance(offset)`` when the prefix up to ``offset`` is complete.

Never more than one block is held: a payload goes straight to the slot. SHA-256 runs over
the image in order (``_ordered``, the one place bytes enter it): a block that arrives in order
is hashed as it comes, one that came early is read back from the slot when the gap before it
fills. Measured under the real MicroPython (docs/performance.md), holding early blocks in RAM
would cost a window's worth of heap; reading back costs one buffer, allocated here, once. The
same buffer re-hashes the slot on resume, because a SHA-256 state cannot be saved on
MicroPython.

With ``pipe`` (device/pipe.py: the manifest says the bytes sent are compressed or a delta) the
payload goes to ``pipe.write`` instead, which decodes it into the slot and hashes the image as
installed; the pipe also decides where a resumed download restarts. Bad data there is CORRUPT.
Windowed, a pipe's blocks go through ``pipe.Parked`` instead (early ones wait in a file).
"""

import hashlib

from . import coap

# accept() verdicts
OK = 0  # block written, more to come
DONE = 1  # last block written; check verified()
RETRY = 2  # a response we cannot use (wrong block, server error): ask again, counts as a failure
RESTART = 3  # the ETag changed: the image under the URI changed, start it over
GONE = 4  # 4.04 / 4.xx: the URI names no image (result: invalid URI)
CORRUPT = 5  # more bytes than announced, or Size2 disagrees with the manifest

CONTENT = 0x45


def szx_for(block_size):
    """SZX for a block size (16..1024), rounded down to a power of two."""
    szx = 0
    while szx < 6 and (16 << (szx + 1)) <= block_size:
        szx += 1
    return szx


class Fetch:
    def __init__(self, slots, uri, size, digest, block_size=1024, stage=None, pipe=None):
        self.slots = slots
        self.stage = stage  # (offset, bytes as sent, out buffer) -> bytes to install, e.g.
        # cipher.ctr(): it writes into the block buffer below, so it needs none of its own
        self.uri = uri
        self.size = size
        self.digest = digest
        self.szx = szx_for(block_size)
        self.offset = 0
        self.etag = None
        self.echo = None  # RFC 9175 Echo from a 4.01: the next requests carry it
        self.fetched = 0  # bytes received over the air by this object (re-fetch accounting)
        self.pipe = pipe
        # a stage writes a whole block into it; reading back (``advance``) takes any size: 256
        # bytes, not a block, for a plain download (one small piece of a fragmented heap)
        self._buf = bytearray(16 << self.szx) if stage else bytearray(256) if pipe is None else None
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

    def reopen(self):
        """Open the slot again at the hashed offset: what lies after it will be written anew."""
        if self.pipe is None:  # a pipe's output only grows, in order
            self.slots.open(self.size, self.offset)

    def _ordered(self, data):
        """The image's bytes, in order, exactly once each."""
        self._h.update(data)
        self.offset += len(data)

    def advance(self, upto):
        """The slot holds every byte below ``upto``: hash what is not hashed yet (read back)."""
        buf = self._buf
        mv = memoryview(buf)
        while self.offset < upto:
            n = self.slots.readinto(self.offset, mv[: min(len(buf), upto - self.offset)])
            if not n:
                break
            self._ordered(mv[:n])

    def put(self, offset, data):
        """One checked block of a windowed download, at its offset (any order, each once)."""
        if self.stage is not None:  # a stage must work at any offset (AES-CTR does)
            data = self.stage(offset, data, self._buf)
        self.slots.write_at(offset, data)
        self.fetched += len(data)
        if offset == self.offset:
            self._ordered(data)

    def request(self):
        bs = 16 << self.szx
        return coap.Request(coap.GET, self.uri, block2=(self.offset // bs, self.szx),
                            options=[(coap.ECHO, self.echo)] if self.echo else None)

    def accept(self, resp):
        if resp.code == coap.UNAUTHORIZED:
            for n, v in resp.options:
                if n == coap.ECHO and v:
                    self.echo = bytes(v)  # ask again with it (a failure: bounded)
                    return RETRY
        if resp.code != CONTENT:
            if 0x80 <= resp.code < 0xA0 and resp.code not in (0x88, 0x8D):  # 4.xx but 4.08/4.13
                return GONE
            return RETRY
        b2 = resp.block2
        data = resp.payload
        if b2 is None:
            # The server sent the whole image in one response (it fits a datagram).
            if self.offset != 0:
                return RETRY
            num, more, szx = 0, False, self.szx
        else:
            num, more, szx = b2
        if szx > self.szx:
            return RETRY  # a server may only shrink the block size (RFC 7959 2.4)
        bs = 16 << szx
        if num * bs != self.offset:
            return RETRY
        if resp.etag is not None:
            if self.etag is None:
                self.etag = bytes(resp.etag)
            elif bytes(resp.etag) != self.etag:
                return RESTART
        if resp.size2 is not None and resp.size2 != self.size:
            return CORRUPT
        if more and len(data) != bs:
            return RETRY
        if self.offset + len(data) > self.size:
            return CORRUPT
        self.szx = szx
        if self.stage is not None:
            data = self.stage(self.offset, data, self._buf)
        if self.pipe is not None:
            try:
                self.pipe.write(data)
            except ValueError:  # pipe, inflate or patch: the data does not decode
                return CORRUPT
            self.offset += len(data)
        else:
            self.slots.write(data)
            self._ordered(data)
        self.fetched += len(data)
        if more:
            return OK
        return DONE

    def restart(self):
        if self.pipe is not None:
            self.pipe.cp = None
        self.start(0)

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
