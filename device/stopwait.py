"""Stop-and-wait download (config ``"transfer": "stop-and-wait"``, and decoded images where
no file can park early blocks): one CON GET per block, RFC 7959 as any CoAP server knows it.

Its own module, imported by download.py only for such a transfer and dropped after: a
windowed download (the default) does not hold its code.
"""

from . import const, lifecycle
from .agent import DOWNLOADING
from .download import _persist, _refused, _report_step


def run(a, f, img):
    """One CON GET per block (plain RFC 7959 servers). True: all blocks are in."""
    from .fetch import DONE, RETRY

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
        resp = yield f.request()
        if resp is None:
            a.failures += 1
            continue
        v = f.accept(resp)
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
            if s["img"] is not img or s["state"] != DOWNLOADING:
                return False


def _report_and_handle(a, img):
    a.progress_reports += 1
    cmd = yield from a._report()
    if cmd:
        a._handle(cmd)
