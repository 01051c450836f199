"""The agent's persistent state: one small JSON file, replaced atomically.

Written rarely (flash wear: at most once per 16 KiB of download, plus once per lifecycle step)
and always whole: write ``<path>.tmp``, then rename it over ``<path>``. MicroPython has no
``os.replace``; ``os.rename`` over an existing file works on unix and littlefs, FAT needs the
old file removed first, so a crash between the remove and the rename leaves only the complete
temp file, which ``load`` then takes. JSON, not CBOR: readable with ``cat`` on a board, and it
needs nothing the agent does not already have.
"""

import json
import os


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def atomic_write(path, data):
    """Replace ``path`` with ``data`` so that a power cut leaves the old or the new file."""
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    try:
        f.write(data)
        f.flush()
    finally:
        f.close()
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT: rename does not overwrite. load() copes with the window in between.
        if _exists(path):
            os.remove(path)
        os.rename(tmp, path)


def _read_json(path):
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        obj = json.loads(f.read())
    except ValueError:
        return None
    finally:
        f.close()
    return obj if isinstance(obj, dict) else None


class Store:
    """A dict persisted at ``path``. ``save`` writes only when something changed."""

    def __init__(self, path):
        self.path = path
        self.writes = 0  # counted: the flash-wear budget is a tested property

    def load(self):
        obj = _read_json(self.path)
        if obj is None:
            obj = _read_json(self.path + ".tmp")
        return obj if obj is not None else {}

    def save(self, obj):
        atomic_write(self.path, json.dumps(obj).encode())
        self.writes += 1

