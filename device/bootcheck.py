"""The boot check of a wake after an install: confirm the new image, or roll it back.

Its own module: only wakes with an image installed and not yet confirmed (state DOWNLOADED or
UPDATING) need it, so the agent imports it then and drops it after (on MicroPython a loaded
module's bytecode lives in the heap).
"""

from . import lifecycle
from .agent import REBOOT


def check(agent):
    """None: go on with the wake; ``(REBOOT, 0)``: reset now."""
    s = agent.s
    img = s["img"]
    slots = agent.slots
    if s["state"] == lifecycle.DOWNLOADED and img is not None:
        if img["slot"] in (slots.running(), slots.next_boot()):
            agent._go(lifecycle.INSTALL)  # the power went between set_pending and saving
            s["boots"] = 0
            agent._save()
    if s["state"] != lifecycle.UPDATING:
        return None
    if slots.running() != img["slot"]:
        if slots.next_boot() == img["slot"]:
            return (REBOOT, 0)  # installed, the reset did not happen yet
        # The bootloader went back: the new image crashed or ran twice unconfirmed.
        agent._finish(lifecycle.ROLLBACK)
        return None
    if s.get("confirming"):
        return _confirm(agent)
    if not agent._booted:
        agent._booted = True
        s["boots"] = s.get("boots", 0) + 1
        if s["boots"] == 1:
            s["since"] = agent.clock()
        agent._save()
    if s["boots"] > 1:
        return _rollback(agent)
    verdict = agent.self_test(slots)
    if verdict is True:
        return _confirm(agent)
    now = agent.clock()
    if verdict is False or now - s["since"] > agent.confirm_s or now < s["since"]:
        return _rollback(agent)
    agent._go(lifecycle.BOOT_WAIT)
    return None


def _confirm(agent):
    s = agent.s
    s["confirming"] = True  # confirm is two writes (slots, state): either order is safe now
    agent._save()
    agent.slots.confirm()
    s["seq"] = s["img"]["seq"]
    s["digest"] = s["img"]["digest"]  # the running image: the base a delta must name
    s.pop("confirming", None)
    s.pop("boots", None)
    s.pop("since", None)
    agent._finish(lifecycle.CONFIRM)
    return None


def _rollback(agent):
    agent.slots.rollback()
    s = agent.s
    s.pop("boots", None)
    s.pop("since", None)
    agent._finish(lifecycle.ROLLBACK)
    return (REBOOT, 0)
