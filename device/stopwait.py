"""Stop-and-wait download (config ``"transfer": "stop-and-wait"``, and decoded images where
no file can park early blocks): one CON GET per block, RFC 7959 as any CoAP server knows it.

Its own module, imported by download.py only for such a transfer and dropped after: a
windowed download (the default) does not hold its code, nor that of ``request`` and
``accept``, the Block2 client rules of a ``fetch.Fetch`` that only this transfer uses.
"""

from . import coap, const, lifecycle
from .download import _persist, _refused, _report_step
from .fetch import CONTENT, CORRUPT, GONE, RESTART

# accept() verdicts, besides fetch's RESTART, GONE and CORRUPT
OK = 0  # block written, more to come
DONE = 1  # last block written; check f.verified()
RETRY = 2  # a response we cannot use (wrong block, server error): ask again, counts as a failure


def run(a, f, img):
    """One CON GET per block (plain RFC 7959 servers). True: all blocks are in."""
    s = a.s
    step, next_report = _report_step(f, img)
    if s.pop("fresh", None):
        yield from _report_and_handle(a, img)
        if s["img"] is not img:
            return False
    a._restarts = 0
    while True:
        if a._exhausted():
            return False
        a.phase = const.PH_DOWNLOAD
        resp = yield request(f)
        if resp is None:
            a.failures += 1
            continue
        v = accept(f, resp)
        if v == RETRY:
            a.failures += 1
            continue
        go = _refused(a, v, f, img)
        if go is not None:
            if not go:
                return False
            continue
        a._go(lifecycle.BLOCK)
        if v == DONE:
            return True
        _persist(a, f, img)
        if f.offset >= next_report:
            next_report += step
            yield from _report_and_handle(a, img)
            if s["img"] is not img or s["state"] != lifecycle.DOWNLOADING:
                return False


def _report_and_handle(a, img):
    a.progress_reports += 1
    cmd = yield from a._report()
    if cmd:
        a._handle(cmd)


def request(f):
    """The CON GET of the next block of ``f`` (with the Echo a 4.01 asked for, if any)."""
    echo = getattr(f, "echo", None)  # set by accept
    return coap.Request(coap.GET, f.uri, block2=(f.offset // (16 << f.szx), f.szx),
                        options=[(coap.ECHO, echo)] if echo else None)


def accept(f, resp):
    """Check the answer to ``request(f)``, write its block, and say what happened (a verdict)."""
    if resp.code == coap.UNAUTHORIZED:
        for n, v in resp.options:
            if n == coap.ECHO and v:
                f.echo = bytes(v)  # ask again with it (a failure: bounded)
                return RETRY
    if resp.code != CONTENT:
        if 0x80 <= resp.code < 0xA0 and resp.code not in (0x88, 0x8D):  # 4.xx but 4.08/4.13
            return GONE
        return RETRY
    b2 = resp.block2
    data = resp.payload
    if b2 is None:
        # The server sent the whole image in one response (it fits a datagram).
        if f.offset != 0:
            return RETRY
        num, more, szx = 0, False, f.szx
    else:
        num, more, szx = b2
    if szx > f.szx:
        return RETRY  # a server may only shrink the block size (RFC 7959 2.4)
    bs = 16 << szx
    if num * bs != f.offset:
        return RETRY
    if resp.etag is not None:
        if f.etag is None:
            f.etag = bytes(resp.etag)
        elif bytes(resp.etag) != f.etag:
            return RESTART
    if resp.size2 is not None and resp.size2 != f.size:
        return CORRUPT
    if more and len(data) != bs:
        return RETRY
    if f.offset + len(data) > f.size:
        return CORRUPT
    f.szx = szx
    if f.stage is not None:
        data = f.stage(f.offset, data, f._buf)
    if f.pipe is not None:
        try:
            f.pipe.write(data)
        except ValueError:  # pipe, inflate or patch: the data does not decode
            return CORRUPT
    else:
        f.slots.write(data)
        f._h.update(data)  # in order: hashed as it comes
    f.offset += len(data)
    if more:
        return OK
    return DONE
