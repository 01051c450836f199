"""App bundles: unpack a POSIX ustar archive (``cc bundle``) from a slot file into a directory.

A MicroPython application is a directory of modules and data; file slots carry it as one
uncompressed ustar stream (the signed digest covers these bytes). Unpacking streams through one
512-byte buffer: no file is ever held in RAM. ``unpack`` first empties the target, so running
it again after a power cut restarts it cleanly; the slot only becomes bootable after it returned
(``FileSlots.set_pending``). Only regular files and directories; a name that is absolute or
climbs out with ``..`` refuses the whole bundle (``BundleError``).
"""

import os

BLOCK = 512


class BundleError(ValueError):
    pass


def _isdir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return None


def remove_tree(path):
    """Delete ``path`` and everything under it (absent: nothing to do)."""
    kind = _isdir(path)
    if kind is None:
        return
    if not kind:
        os.remove(path)
        return
    for name in os.listdir(path):
        remove_tree(path + "/" + name)
    os.rmdir(path)


def _makedirs(path):
    p = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        p = p + part if p in ("", "/") else p + "/" + part
        if _isdir(p) is None:
            os.mkdir(p)


def _field(buf, a, b):
    s = bytes(buf[a:b])
    n = s.find(b"\0")
    return (s if n < 0 else s[:n]).decode()


def _name(buf):
    name = _field(buf, 0, 100)
    if buf[257:262] == b"ustar":
        prefix = _field(buf, 345, 500)
        if prefix:
            name = prefix + "/" + name
    name = name.rstrip("/")
    if name.startswith("./"):
        name = name[2:]
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise BundleError("bad name in bundle: %r" % name)
    return name


def unpack(src, dest, buf=None):
    """Unpack the bundle in file ``src`` into directory ``dest``; return the file count."""
    buf = buf or bytearray(BLOCK)
    mv = memoryview(buf)
    remove_tree(dest)
    _makedirs(dest)
    n = 0
    f = open(src, "rb")
    try:
        while True:
            if f.readinto(buf) != BLOCK:
                raise BundleError("bundle truncated")
            if not any(buf):
                return n  # the end: a zero block
            name = _name(buf)
            kind = buf[156]
            size = int(_field(buf, 124, 136).strip() or "0", 8)
            path = dest + "/" + name
            if kind == 0x35:  # "5": a directory
                _makedirs(path)
                continue
            if kind not in (0x30, 0):  # "0" or NUL: a regular file
                raise BundleError("only files and directories: %r" % name)
            i = path.rfind("/")
            _makedirs(path[:i])
            out = open(path, "wb")
            try:
                left = size
                while left > 0:
                    if f.readinto(buf) != BLOCK:
                        raise BundleError("bundle truncated")
                    out.write(mv[:min(left, BLOCK)])
                    left -= BLOCK
            finally:
                out.close()
            n += 1
    finally:
        f.close()
