"""The download phase of a wake: the image into the inactive slot, block by block (windowed,
``burst.Window``, or stop-and-wait), resumable, reporting progress; then its digest checked.

Functions of the agent (``a``: ``agent.Agent``), not methods: the agent imports this module
for the download phase and drops it after (with fetch and burst), so its code is not in the
heap while the agent reports, verifies an offer or installs.
"""

from . import const, lifecycle
from .agent import DOWNLOADING, PERSIST_EVERY, _collect, _drop, _hex, _unhex
from .slots import SlotError

REPORT_EVERY = 65536  # bytes between progress reports, at most (and at least every 25 %)
STOP_AND_WAIT = "stop-and-wait"  # config "transfer": one CON GET per block (plain RFC 7959)


def run(a):
    """Download what is left of the offered image (DOWNLOADING), check it; True once it is
    DOWNLOADED (then the agent installs it), else False (the job ended, or the rest waits for
    the next wake)."""
    s = a.s
    img = s["img"]
    a.phase = const.PH_DOWNLOAD
    _collect()  # the window's long-lived objects go low, before the datagrams churn
    from .fetch import Fetch

    if s["state"] == DOWNLOADING:
        f = a._fetch
        if f is None:
            stage = _stage(a, img)
            if isinstance(stage, int):  # the key changed under a download in flight
                a._finish(lifecycle.FAIL, stage)
                return False
            if "sent" in img:  # compressed or a delta: decoded after any decryption
                from .pipe import fetch

                f = fetch(Fetch, a, img, stage)
            else:
                f = Fetch(a.slots, img["uri"], img["size"], _unhex(img["digest"]),
                          a.block_size, stage)
            try:
                f.start(s["offset"], _unhex(img["etag"]) if img["etag"] else None)
            except (OSError, SlotError, ValueError):
                a._finish(lifecycle.FAIL, const.RES_NO_SPACE)
                return False
            a._fetch = f
        # a pipe decodes in order: windowed where a file can hold the early blocks and
        # the heap allows (pipe.Parked), else stop-and-wait
        if a.transfer == STOP_AND_WAIT or (f.pipe and not f.pipe.parked):
            from . import stopwait  # its own module: not in the heap of a windowed download

            try:
                done = yield from stopwait.run(a, f, img)
            finally:
                stopwait = None
                _drop("stopwait")
        else:
            done = yield from _windowed(a, f, img)
        if not done:
            return False
        if not f.verified():
            a._finish(lifecycle.CORRUPT)
            return False
        a._fetch = None
        f.close()
        s["offset"] = img["size"]
        a._go(lifecycle.COMPLETE)
        a._save()
    return True


def _stage(a, img):
    """The decrypting stage of an encrypted download (None for a plain one; a result code
    if the key no longer unwraps), rebuilt on every resume: CTR needs only the offset."""
    if not img.get("wk"):
        return None
    got = a._content_key(_unhex(img["wk"]))
    if isinstance(got, int):
        return got
    from . import cipher

    return cipher.ctr(got[0], got[1], _unhex(img["iv"]))


def _report_step(f, img):
    """Bytes between progress reports, and the offset of the next one."""
    step = min(REPORT_EVERY, max(PERSIST_EVERY, img["size"] // 4))
    return step, (f.offset // step + 1) * step


def _persist(a, f, img):
    """Every PERSIST_EVERY bytes: sync the slot, then save where a restart would resume.

    Through a pipe the restart point is its latest checkpoint (transfer offset, output
    offset and applier state, taken together), persisted once it is PERSIST_EVERY bytes
    of transfer or of output past the saved one."""
    s = a.s
    if f.pipe is None:
        if f.offset - s["offset"] < PERSIST_EVERY:
            return
        offset = f.offset
    else:
        offset = f.pipe.due(s, PERSIST_EVERY)  # puts the restart point in s["cp"]
        if offset is None:
            return
    a.slots.sync()
    s["offset"] = offset
    img["etag"] = _hex(f.etag) if f.etag else None
    a._save()


def _window(a, f, img):
    from .burst import Window

    s = f.pipe and f.pipe.parked  # a decoded download: early blocks parked in a file;
    # its restart points (pipe.due) are checked after every block, as stop-and-wait does
    w = Window(img["uri"], f.size, f.szx, s or f, offset=f.offset, etag=f.etag,
               max_window=16 if s else a.window, step=1 if s else PERSIST_EVERY)
    if s:
        s.ring = w.span << f.szx + 4
    a.window_stats = w
    return w


def _refused(a, v, f, img):
    """None: ``v`` is no refusal. False: it ended the job (GONE, CORRUPT, or the image
    changed twice). True: the image changed, the download starts over."""
    from .fetch import CORRUPT, GONE, RESTART

    if v == GONE:
        a._finish(lifecycle.FAIL, const.RES_INVALID_URI)
        return False
    if v == CORRUPT:
        a._finish(lifecycle.CORRUPT)
        return False
    if v == RESTART:
        return _restart(a, f, img)
    return None


def _restart(a, f, img):
    """The image under the URI changed: start it over once (twice: it keeps changing)."""
    a._restarts += 1
    if a._restarts > 1:
        a._finish(lifecycle.CORRUPT)
        return False
    a._go(lifecycle.RESTART)
    if f.pipe is not None:
        f.pipe.cp = None  # its restart point goes with the image
    f.start(0)
    img["etag"] = None
    a.s["offset"] = 0
    a.s["cp"] = None
    a._save()
    return True


def _windowed(a, f, img):
    """NON Block2 bursts (``burst.Window``), reports riding along. True: all blocks in."""
    s = a.s
    step, next_report = _report_step(f, img)
    fresh = s.pop("fresh", None)
    a._restarts = 0
    if f.pipe is None:  # an earlier window of this power-on may have written past f.offset:
        f.slots.open(f.size, f.offset)  # it is written anew (a pipe's output only grows)
    w = _window(a, f, img)
    asked = False  # a report rides along until its exchange is over (runs end sooner:
    # every 16 KiB for persistence, which at 32 blocks a round trip is half an RTT)
    while True:
        if not asked and (fresh or f.offset >= next_report):
            if not fresh:
                next_report = (f.offset // step + 1) * step
            fresh = False
            a.progress_reports += 1
            req, counter = a._report_request()
            w.ask(req)
            req = None  # the window holds it until sent, then only its datagram
            asked = True
        before = w.base
        a.phase = const.PH_DOWNLOAD
        yield w
        if w.base != before:
            a._go(lifecycle.BLOCK)
        if asked and w.side is None:
            asked = False
            cmd = a._report_answer(w.side_response, counter)
            if cmd:
                a._handle(cmd)
            if s["img"] is not img or s["state"] != DOWNLOADING:
                return False
        go = _refused(a, w.verdict, f, img)
        if go is not None:
            if not go:
                return False
            w = _window(a, f, img)
            continue
        if w.verdict is not None:  # no answer for long: the link is down, next wake
            a.failures = a.max_failures
            _persist(a, f, img)
            return False
        if w.complete:
            return True
        _persist(a, f, img)
        if a._exhausted():
            return False
