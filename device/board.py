"""The blocking main loop of a board: wake, sleep, reset when the agent says so.

Network bring-up (Wi-Fi, cellular) is the application's business and happens before ``run``.
``slots.boot()`` must run exactly once per power-on, before this (``examples/boot.py``): for
``FileSlots`` it is the bootloader's decision; a second call would count a second boot.
"""

import time

from . import coap, udp
from .agent import REBOOT, Agent
from .slots import Esp32Partitions, FileSlots
from .state import Store


def make_slots(config):
    """``"slots": "esp32"`` (OTA partitions) or ``"files"`` (slot files under ``slots_dir``)."""
    if config.get("slots", "esp32") == "files":
        return FileSlots(config.get("slots_dir", "/fota"), config.get("capacity", 1024 * 1024))
    return Esp32Partitions()


def make_link(config):
    """The gateway link. ``ack_timeout_ms``: RFC 7252's ACK_TIMEOUT (2 s) suits unknown links;
    on a link with a known short round trip a smaller one makes updates under loss several times
    faster (bench/lossy.py)."""
    return udp.UdpLink(config["gateway"], config.get("port", 5683),
                       config.get("ack_timeout_ms", 2000) / 2000)


def _reset():
    import machine

    machine.reset()


def run(config, slots=None, store=None, link=None, reset=None, sleep=None, wakes=None):
    """Wake forever (or ``wakes`` times); return the last ``(action, seconds)``.

    ``config["deepsleep"]``: sleep with ``machine.deepsleep`` (the board resets on waking and
    ``main.py`` starts over from the persisted state) instead of ``time.sleep``.
    """
    slots = slots or make_slots(config)
    store = store or Store(config.get("state", "/fota_state.json"))
    link = link or make_link(config)
    if reset is None:
        reset = _reset
    if sleep is None:
        if config.get("deepsleep"):
            import machine

            def sleep(s):
                machine.deepsleep(int(s * 1000))
        else:
            sleep = time.sleep
    agent = Agent(config, slots, store)
    n = 0
    out = None
    while wakes is None or n < wakes:
        n += 1
        out = coap.run(agent.wake(), link)
        action, seconds = out
        if action == REBOOT:
            reset()
            return out
        sleep(seconds)
    return out
