"""The download phase of a wake: the image into the inactive slot, block by block (windowed,
``burst.Window``, or stop-and-wait), resumable, reporting progress; then its digest checked.

Functions of the agent (``a``: ``agent.Agent``), not methods: the agent imports this module
for the download phase and drops it after (with fetch and burst), so its code is not in the
heap while the agent reports, verifies an offer or installs.
"""

from . import agent, const, lifecycle  # agent's names through its module: this module's
# globals stay few (a module's dict is heap)


def run(a):
    """Download what is left of the offered image (DOWNLOADING), check it; True once it is
    DOWNLOADED (then the agent installs it), else False (the job ended, or the rest waits for
    the next wake)."""
    s = a.s
    img = s["img"]
    a.phase = const.PH_DOWNLOAD
    agent._collect()  # the window's long-lived objects go low, before the datagrams churn
    from .fetch import Fetch

    if s["state"] == lifecycle.DOWNLOADING:
        f = a._fetch
        if f is None:
            from .slots import SlotError

            stage = None  # the decrypting stage of an encrypted download, rebuilt on every
            # resume: CTR needs only the offset
            if img.get("wk"):
                got = a._content_key(agent._unhex(img["wk"]))
                if isinstance(got, int):  # the key changed under a download in flight
                    a._finish(lifecycle.FAIL, got)
                    return False
                from . import cipher

                stage = cipher.ctr(got[0], got[1], agent._unhex(img["iv"]))
            if "sent" in img:  # compressed or a delta: decoded after any decryption
                from .pipe import fetch

                f = fetch(Fetch, a, img, stage)
            else:
                f = Fetch(a.slots, img["uri"], img["size"], agent._unhex(img["digest"]),
                          a.block_size, stage)
            try:
                f.start(s["offset"], agent._unhex(img["etag"]) if img["etag"] else None)
            except (OSError, SlotError, ValueError):
                a._finish(lifecycle.FAIL, const.RES_NO_SPACE)
                return False
            a._fetch = f
        # a pipe decodes in order: windowed where a file can hold the early blocks and
        # the heap allows (pipe.Parked), else stop-and-wait
        if a.stop_and_wait or (f.pipe and not f.pipe.parked):
            from . import stopwait  # its own module: not in the heap of a windowed download

            try:
                done = yield from stopwait.run(a, f, img)
            finally:
                stopwait = None
                agent._drop("stopwait")
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


def _report_step(f, img):
    """Bytes between progress reports, and the offset of the next one."""
    # at most 64 KiB, at least every 25 % (and no more often than the offset is persisted)
    step = min(65536, max(agent.PERSIST_EVERY, img["size"] // 4))
    return step, (f.offset // step + 1) * step


def _persist(a, f, img):
    """Every PERSIST_EVERY bytes: sync the slot, then save where a restart would resume.

    Through a pipe the restart point is its latest checkpoint (transfer offset, output
    offset and applier state, taken together), persisted once it is PERSIST_EVERY bytes
    of transfer or of output past the saved one."""
    s = a.s
    if f.pipe is None:
        if f.offset - s["offset"] < agent.PERSIST_EVERY:
            return
        offset = f.offset
    else:
        offset = f.pipe.due(s, agent.PERSIST_EVERY)  # puts the restart point in s["cp"]
        if offset is None:
            return
    a.slots.sync()
    s["offset"] = offset
    img["etag"] = agent._hex(f.etag) if f.etag else None
    a._save()


def _refused(a, v, f, img):
    """None: ``v`` is no refusal. False: it ended the job (GONE, CORRUPT, or the image
    changed twice). True: the image under the URI changed (RESTART), the download starts over
    (once; twice: it keeps changing)."""
    from .fetch import CORRUPT, GONE, RESTART

    if v == GONE:
        a._finish(lifecycle.FAIL, const.RES_INVALID_URI)
        return False
    if v == RESTART:
        a._restarts += 1
        if a._restarts == 1:
            a._go(lifecycle.RESTART)
            if f.pipe is not None:
                f.pipe.cp = None  # its restart point goes with the image
            f.start(0)
            img["etag"] = None
            a.s["offset"] = 0
            a.s["cp"] = None
            a._save()
            return True
        v = CORRUPT
    if v == CORRUPT:
        a._finish(lifecycle.CORRUPT)
        return False
    return None


def _windowed(a, f, img):
    """NON Block2 bursts (``burst.Window``), reports riding along. True: all blocks in."""
    from .burst import Window

    s = a.s
    step, next_report = _report_step(f, img)
    fresh = s.pop("fresh", None)
    a._restarts = 0
    if f.pipe is None:  # an earlier window of this power-on may have written past f.offset:
        f.slots.open(f.size, f.offset)  # it is written anew (a pipe's output only grows)
    w = None  # made at the start and after a restart
    asked = False  # a report rides along until its exchange is over (runs end sooner:
    # every 16 KiB for persistence, which at 32 blocks a round trip is half an RTT)
    while True:
        if w is None:
            p = f.pipe and f.pipe.parked  # a decoded download: early blocks parked in a file;
            # its restart points (pipe.due) are checked after every block, as stop-and-wait does
            w = Window(img["uri"], f.size, f.szx, p or f, offset=f.offset, etag=f.etag,
                       max_window=16 if p else a.window, step=1 if p else agent.PERSIST_EVERY)
            if p:
                p.ring = w.span << f.szx + 4
            a.window_stats = w
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
        f.etag = w.etag  # saved with the offset (_persist), checked by the next window
        if w.base != before:
            a._go(lifecycle.BLOCK)
        if asked and w.side is None:
            asked = False
            cmd = a._report_answer(w.side_response, counter)
            if cmd:
                a._handle(cmd)
            if s["img"] is not img or s["state"] != lifecycle.DOWNLOADING:
                return False
        if w.verdict is not None:
            go = _refused(a, w.verdict, f, img)
            if go:
                w = a.window_stats = None  # the old window goes before the new one is made
                continue
            if go is None:  # no answer for long: the link is down, next wake
                a.failures = a.max_failures
                _persist(a, f, img)
            return False
        if w.complete:
            return True
        _persist(a, f, img)
        if a._exhausted():
            return False
