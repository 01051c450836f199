"""Report authentication on the device (the gateway side and the wire: gateway/devauth.py).

``ReportAuth(key, path)``: ``seal(report_map)`` returns the payload to POST (the map plus
``R_AUTH: [counter, tag]``) and the counter used; ``open(payload, counter)`` checks the
response's MAC (``C_AUTH``) and returns the command map, or raises ``AuthError``: a command
that is not from the gateway holding this device's key is dropped, not obeyed.

HMAC-SHA256 is written out here (RFC 2104): MicroPython has ``hashlib.sha256`` but no ``hmac``.
The counter must never repeat, even across power cuts, and flash sectors wear out, so it is
persisted by reservation: the file holds a high-water mark, written ``RESERVE`` counters ahead;
after a reset the device continues from the mark (skipping at most ``RESERVE`` values, which the
gateway does not mind: it only wants each counter above the last).
"""

import hashlib

from . import cbor, const
from .state import atomic_write

TAG_BYTES = 16
RESERVE = 32  # counters per flash write
REPORT_LABEL = b"fota-r"
COMMAND_LABEL = b"fota-c"


class AuthError(ValueError):
    pass


def hmac_sha256(key, msg):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def mac(key, label, counter, body):
    return hmac_sha256(key, label + counter.to_bytes(8, "big") + body)[:TAG_BYTES]


def _equal(a, b):
    """Constant-time comparison (no hmac.compare_digest on MicroPython)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _read_mark(path):
    try:
        f = open(path, "rb")
    except OSError:
        return 0
    try:
        text = f.read().strip()
    finally:
        f.close()
    try:
        return int(text)
    except ValueError:
        return 0


class ReportAuth:
    def __init__(self, key, path):
        if len(key) != 32:
            raise ValueError("report key must be 32 bytes")
        self.key = bytes(key)
        self.path = path
        mark = _read_mark(path)
        if mark == 0:  # a lost .tmp is still a valid mark (see state.atomic_write)
            mark = _read_mark(path + ".tmp")
        self.counter = mark  # the next report uses mark + 1: nothing at or below was sent
        self.mark = mark
        self.writes = 0

    def next_counter(self):
        self.counter += 1
        if self.counter > self.mark:
            self.mark = self.counter + RESERVE
            atomic_write(self.path, str(self.mark).encode())
            self.writes += 1
        return self.counter

    def seal(self, report):
        """(payload bytes, counter) for a report map."""
        counter = self.next_counter()
        body = cbor.dumps(report)
        m = dict(report)
        m[const.R_AUTH] = [counter, mac(self.key, REPORT_LABEL, counter, body)]
        return cbor.dumps(m), counter

    def open(self, payload, counter):
        """The command map of an authenticated response to the report sealed with ``counter``."""
        try:
            cmd = cbor.loads(payload)
        except cbor.CBORError:
            raise AuthError("response is not CBOR")
        if not isinstance(cmd, dict):
            raise AuthError("response is not a map")
        tag = cmd.pop(const.C_AUTH, None)
        if not isinstance(tag, bytes):
            raise AuthError("response is not authenticated")
        if not _equal(tag, mac(self.key, COMMAND_LABEL, counter, cbor.dumps(cmd))):
            raise AuthError("response MAC does not verify")
        return cmd
