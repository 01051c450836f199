# boot.py: runs first at every power-on. With file slots ("slots": "files") this is the
# bootloader: it picks the application slot (a new one once on trial, else the confirmed one).
# With ESP32 OTA partitions the ESP-IDF bootloader already chose, and boot() only reads it.
# Paths are relative to the working directory: "/" on a board, the board directory on the
# unix port (`micropython boot.py`).
import json

from fota.slots import make

with open("fota.json") as f:
    make(json.load(f)).boot()
