# main.py: runs after boot.py. Network up (Wi-Fi when the port has one and fota.json names it),
# the application imported from the running slot, then the agent wakes for ever. On the unix
# port a reboot is `exit 75` and the supervising loop in docs/device.md starts over.
import json
import sys

sys.path[0] = ""  # modules from the working directory, as on a board: the unix port puts
# main.py's absolute directory first, and each module loaded then interns its full path for
# good (measured: ~1 KiB of heap in an update run from a 70-character directory)
from fota import board, drop, startup  # noqa: E402

with open("fota.json") as f:
    cfg = json.load(f)
wlan = startup.wifi(cfg)
slots = board.make_slots(cfg)
app = startup.start_app(cfg, slots)
cfg["self_test"] = board.app_self_test(app, wlan)
startup = None
drop("startup")  # done with: its code leaves the heap
board.run(cfg, slots=slots)
