"""Which source addresses have shown they receive what the gateway sends them.

A UDP source address can be forged, so without this a 17-byte block GET sent in a victim's name
made the gateway send the victim 1,044 bytes (61x). A block GET or an observation is served only
to an address that is *verified*: it completed a report exchange recently (the device's normal
wake: report, then fetch), or it echoed an RFC 9175 Echo value the gateway gave it. Anything
else gets 4.01 Unauthorized with an Echo option (about the size of the request), and a client
that supports Echo (libcoap's does) repeats the request with it.

The Echo value is stateless: a 4-byte time and a 6-byte HMAC of (address, time) under a secret
made at start; it is good for ``ECHO_SECONDS``. The table of verified addresses has a cap and an
expiry; a device that fell out of it is asked for an Echo, or verified again by its next report.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_TTL = 3600.0  # seconds an address stays verified after its last report or Echo
DEFAULT_MAX = 100_000  # verified addresses kept (about 100 bytes each)
ECHO_SECONDS = 60  # an Echo value is good for this long
ECHO_MAC_BYTES = 6


class Sources:
    def __init__(self, ttl: float = DEFAULT_TTL, size: int = DEFAULT_MAX, *,
                 clock: Callable[[], float] = time.monotonic, secret: bytes | None = None) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._secret = secret if secret is not None else os.urandom(16)
        self._since: OrderedDict[bytes, float] = OrderedDict()  # oldest verification first

    def __len__(self) -> int:
        return len(self._since)

    def verified(self, key: bytes) -> bool:
        t = self._since.get(key)
        return t is not None and self.clock() - t <= self.ttl

    def verify(self, key: bytes) -> None:
        self._since[key] = self.clock()
        self._since.move_to_end(key)
        while len(self._since) > self.size:
            self._since.popitem(last=False)

    def expire(self) -> None:
        now = self.clock()
        while self._since:
            key, t = next(iter(self._since.items()))
            if now - t <= self.ttl:
                break
            del self._since[key]

    def _mac(self, key: bytes, stamp: bytes) -> bytes:
        return hmac.new(self._secret, stamp + key, hashlib.sha256).digest()[:ECHO_MAC_BYTES]

    def echo_for(self, key: bytes) -> bytes:
        stamp = (int(self.clock()) & 0xFFFFFFFF).to_bytes(4, "big")
        return stamp + self._mac(key, stamp)

    def check_echo(self, key: bytes, value: bytes) -> bool:
        """True (and the address verified) if ``value`` is a fresh Echo made for ``key``."""
        if len(value) != 4 + ECHO_MAC_BYTES:
            return False
        stamp = value[:4]
        age = (int(self.clock()) - int.from_bytes(stamp, "big")) & 0xFFFFFFFF
        if age > ECHO_SECONDS or not hmac.compare_digest(value[4:], self._mac(key, stamp)):
            return False
        self.verify(key)
        return True
