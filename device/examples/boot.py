# boot.py: runs first at every power-on. With file slots ("slots": "files"), this is the
# bootloader: it picks the application slot (a new one once on trial, else the confirmed one).
# With ESP32 OTA partitions the ESP-IDF bootloader already chose, and boot() only reads it.
import json

from fota.slots import Esp32Partitions, FileSlots

with open("/fota.json") as f:
    _cfg = json.load(f)
if _cfg.get("slots", "esp32") == "files":
    FileSlots(_cfg.get("slots_dir", "/fota"), _cfg.get("capacity", 1024 * 1024)).boot()
else:
    Esp32Partitions().boot()
