# main.py: bring the network up, start the application, then let the agent wake forever.
# The agent is the package copied to the board as /fota (any name works: it imports relatively).
import json
import time

import network

from fota import board

with open("/fota.json") as f:
    cfg = json.load(f)

wlan = network.WLAN(network.STA_IF)
wlan.active(True)
if not wlan.isconnected():
    wlan.connect(cfg["wifi_ssid"], cfg["wifi_key"])
    for _ in range(100):  # bounded: 20 s
        if wlan.isconnected():
            break
        time.sleep_ms(200)

app = {}
if cfg.get("slots") == "files":
    # The image is the application itself: a Python source file in the running slot.
    from fota.slots import FileSlots

    slots = FileSlots(cfg.get("slots_dir", "/fota"), cfg.get("capacity", 1024 * 1024))
    with open(slots.path(slots.running())) as f:
        exec(f.read(), app)


def self_test(slots):
    # True: keep the new image; False: roll back now; None: not decided yet (the agent rolls
    # back when confirm_s passes). An application defines self_test() to prove itself.
    return app.get("self_test", lambda: wlan.isconnected())()


cfg["self_test"] = self_test
board.run(cfg)
