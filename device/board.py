"""The blocking main loop of a board: wake, sleep, reset when the agent says so; and the
application's self-test for the agent (``main.py`` starts the network and the application
with ``startup.py`` first, then drops it).

``slots.boot()`` must run exactly once per power-on, before this (``examples/boot.py``): for
``FileSlots`` it is the bootloader's decision; a second call would count a second boot.

Reboot: ``machine.reset()`` where the port has it. The unix port has none: there ``run`` ends
the process with exit status ``REBOOT_EXIT`` (75) and a supervising loop starts ``boot.py``
then ``main.py`` again (docs/device.md). Paths in the config are relative to the working
directory (``/`` on a board, the board directory on the unix port).
"""

import sys
import time

from . import coap, udp
from .agent import REBOOT, SLEEP, Agent
from .slots import make as make_slots
from .state import Store

REBOOT_EXIT = 75  # exit status of main.py on the unix port: "reset me" (EX_TEMPFAIL)
STATE = "fota_state.json"




def make_link(config):
    """The gateway link. ``ack_timeout_ms``: the first guess of the timeout (RFC 7252's 2 s); the
    link measures every exchange and adapts (``rtt.Rtt``)."""
    return udp.UdpLink(config["gateway"], config.get("port", 5683),
                       config.get("ack_timeout_ms", 2000) / 2000)


def app_self_test(app, wlan=None):
    """The agent's ``self_test``: the app's own ``self_test()`` when it has one; an app that
    did not import fails; otherwise pass once the network (if any) is up."""

    def self_test(slots):
        if app is None:
            return False
        f = getattr(app, "self_test", None)
        if f is not None:
            return f()
        return True if wlan is None else wlan.isconnected()

    return self_test


def _reset():
    try:
        import machine

        reset = machine.reset
    except (ImportError, AttributeError):  # the unix port: the supervising loop restarts us
        sys.exit(REBOOT_EXIT)
    reset()


def run(config, slots=None, store=None, link=None, reset=None, sleep=None, wakes=None):
    """Wake forever (or ``wakes`` times, or the config's ``wakes``); return the last
    ``(action, seconds)``.

    ``config["deepsleep"]``: sleep with ``machine.deepsleep`` (the board resets on waking and
    ``main.py`` starts over from the persisted state) instead of ``time.sleep``.
    """
    slots = slots or make_slots(config)
    store = store or Store(config.get("state", STATE))
    link = link or make_link(config)
    if reset is None:
        reset = _reset
    if wakes is None:
        wakes = config.get("wakes")
    if sleep is None:
        if config.get("deepsleep"):
            import machine

            def sleep(s):
                machine.deepsleep(int(s * 1000))
        else:
            sleep = time.sleep
    try:
        agent = Agent(config, slots, store)
    except MemoryError:  # nothing to report with: say it, sleep, the next power-on tries again
        print("fota: out of RAM starting the agent")
        out = (SLEEP, config.get("wake_s", 60))
        if wakes is None:
            sleep(out[1])
            reset()
        return out
    n = 0
    out = None
    ooms = 0
    while wakes is None or n < wakes:
        n += 1
        try:
            out = coap.run(agent.wake(), link)
        except MemoryError:  # not even the wake could start: the next one tries again
            import gc

            gc.collect()
            out = (SLEEP, agent.wake_s)
        if agent.ooms != ooms:  # for the serial console: the gateway was told already
            ooms = agent.ooms
            print("fota: out of RAM in phase", agent.oom_phase, "- trying again next wake")
        action, seconds = out
        if action == REBOOT:
            link.close()
            reset()
            return out
        if wakes is None or n < wakes:
            sleep(seconds)
    return out
