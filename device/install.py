"""The install phase: the verified image in the inactive slot is marked to boot next (a
bundle unpacked into its directory first), the gateway told, the board reset into it.

Its own module, imported by ``Agent._install`` after a download (or at a wake that finds the
state DOWNLOADED: verified before a power cut) and dropped with the reboot.
"""

from . import const, lifecycle
from .agent import REBOOT, _collect, _drop


def run(a):
    """DOWNLOADED: mark the slot to boot next, tell the gateway, reboot into it (a generator
    of the agent's wake: ``(REBOOT, 0)``, or None when the image cannot be installed)."""
    s = a.s
    a.phase = const.PH_INSTALL
    a._forget()  # the download's window and code (and a decoder's, after a decoded one)
    _collect()
    try:
        a.slots.set_pending()
    except ValueError:  # bundle.BundleError: signed, but no app can come out of it
        a._finish(lifecycle.REFUSE, const.RES_UNSUPPORTED_IMAGE)
        return None
    finally:
        _drop("bundle")
    a._go(lifecycle.INSTALL)
    s["boots"] = 0
    a._save()
    yield from a._report()
    return (REBOOT, 0)
