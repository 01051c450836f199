"""A/B image slots: where a new image is streamed, and which one boots.

Two backends share one small interface, so the agent never knows which it drives:

``FileSlots(dir, capacity, bundles=False)``
    Two slot files (``a.bin``, ``b.bin``) and ``boot.json`` (which slot is active, which is
    pending and whether the pending one was tried). ``boot()`` plays the bootloader: call it
    once at power-on. For the unix port, the simulators, and boards whose "firmware" is a
    MicroPython application chosen at boot (``device/examples/boot.py``). With ``bundles`` an
    image is an app bundle (``device/bundle.py``): ``set_pending`` unpacks it into the slot's
    directory (``app_dir``: ``a/``, ``b/``) first, so a slot is never bootable half unpacked.

``Esp32Partitions()`` (``esp32slots.py``: imported only by boards that use it)
    The real OTA slots through ``esp32.Partition``: writes whole 4096-byte sectors (erase with
    ``ioctl(6, block)``, then ``writeblocks``), boots with ``set_boot``, confirms with
    ``Partition.mark_app_valid_cancel_rollback``. The ESP-IDF bootloader does what ``boot()``
    emulates for files.

Interface: ``boot() running() inactive() next_boot() capacity() open(size, offset) write(data)
write_at(offset, data) sync() readinto(offset, buf) set_pending() confirm() rollback()``.
``write`` appends at the position ``open`` set; ``write_at`` writes anywhere at or after it (a
windowed download takes blocks in any order, each once); ``sync`` makes everything written so
far durable (the agent persists an offset only after a ``sync``). For deltas:
``read_running(offset, buf)`` (the bytes the running slot holds; fewer past its end).
"""

import os

from .state import _read_json, atomic_write

import json

SLOTS_DIR = "slots"  # relative: "/" is the working directory on a board


def make(config):
    """The slots a config names: ``"slots": "esp32"`` (OTA partitions) or ``"files"`` (slot
    files under ``slots_dir``; ``bundles``: images are app bundles, unpacked into the slot's
    directory). ``boot.py`` needs only this module."""
    if config.get("slots", "esp32") == "files":
        return FileSlots(config.get("slots_dir", SLOTS_DIR), config.get("capacity", 1024 * 1024),
                         config.get("bundles", False))
    from .esp32slots import Esp32Partitions

    return Esp32Partitions()


class SlotError(Exception):
    pass


def _other(name):
    return "b" if name == "a" else "a"


class FileSlots:
    def __init__(self, root, capacity=2 * 1024 * 1024, bundles=False):
        self.root = root
        self._capacity = capacity
        self.bundles = bundles
        self._f = None
        self._rf = None  # the running slot, open while a delta reads it
        self._pos = 0
        self._boot_path = root + "/boot.json"
        try:
            os.mkdir(root)
        except OSError:
            pass
        b = _read_json(self._boot_path)
        if b is None:
            b = _read_json(self._boot_path + ".tmp")
        self._b = b or {"active": "a", "pending": None, "tried": False}

    def path(self, name):
        return self.root + "/" + name + ".bin"

    def app_dir(self, name):
        """Where the app of slot ``name`` is unpacked (``bundles``): put it on ``sys.path``."""
        return self.root + "/" + name

    def _save(self):
        atomic_write(self._boot_path, json.dumps(self._b).encode())

    # -- booting ---------------------------------------------------------------------------
    def boot(self):
        """Emulate the bootloader at power-on; return the slot that now runs.

        A pending slot boots once ("tried"); a second boot without ``confirm`` in between means
        the new image never proved itself, so the previous one boots again (automatic rollback).
        """
        b = self._b
        if b["pending"]:
            if b["tried"]:
                b["pending"] = None
                b["tried"] = False
            else:
                b["tried"] = True
            self._save()
        return self.running()

    def running(self):
        b = self._b
        return b["pending"] if b["pending"] and b["tried"] else b["active"]

    def inactive(self):
        return _other(self.running())

    def next_boot(self):
        b = self._b
        return b["pending"] if b["pending"] and not b["tried"] else b["active"]

    def set_pending(self):
        self.close()
        if self.bundles:
            from .bundle import unpack

            n = self.inactive()
            unpack(self.path(n), self.app_dir(n))
        self._b["pending"] = self.inactive()
        self._b["tried"] = False
        self._save()

    def confirm(self):
        b = self._b
        if b["pending"] and b["tried"]:
            b["active"] = b["pending"]
            b["pending"] = None
            b["tried"] = False
            self._save()

    def rollback(self):
        """Boot the previous image next (the running one failed its check)."""
        b = self._b
        if b["pending"]:
            b["pending"] = None
            b["tried"] = False
            self._save()

    # -- writing the inactive slot -----------------------------------------------------------
    def capacity(self):
        return self._capacity

    def open(self, size, offset=0):
        if size > self._capacity:
            raise SlotError("image of %d bytes does not fit a slot of %d" % (size, self._capacity))
        self.close()
        p = self.path(self.inactive())
        if offset == 0:
            self._f = open(p, "wb")
        else:
            self._f = open(p, "r+b")
            self._f.seek(offset)
        self._pos = offset

    def write(self, data):
        self._f.write(data)
        self._pos += len(data)

    def write_at(self, offset, data):
        if offset != self._pos:
            self._f.seek(offset)
        self._f.write(data)
        self._pos = offset + len(data)

    def sync(self):
        if self._f is not None:
            self._f.flush()

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._rf is not None:
            self._rf.close()
            self._rf = None

    def readinto(self, offset, buf):
        """Read the inactive slot (re-hash on resume, verify); return the bytes read."""
        self.sync()
        f = open(self.path(self.inactive()), "rb")
        try:
            f.seek(offset)
            return f.readinto(buf)
        finally:
            f.close()

    # -- reading the running slot (the base of a delta) ---------------------------------------
    def read_running(self, offset, buf):
        if self._rf is None:
            self._rf = open(self.path(self.running()), "rb")
        self._rf.seek(offset)
        return self._rf.readinto(buf) or 0

