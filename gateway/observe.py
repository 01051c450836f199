"""Observations of ``c/<device id>`` (RFC 7641), with a cap per device, per source and in total.

aiocoap kept every registration forever (~8.8 KiB each: 180 registrations/s grew the gateway
from 95 MB to 502 MB in 300 s, and one upgrade then notified all 54k). Here an observation
lives ``lifetime`` seconds from its last registration: the gateway says so in Max-Age, and an
observer that wants more re-registers (same token) before then. A Reset in answer to a
notification ends it at once (RFC 7641 3.6). A registration over a cap is served as a plain
GET (no Observe option in the answer, which tells the client it is not observing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_LIFETIME = 300.0  # seconds an observation lasts without re-registration (its Max-Age)
DEFAULT_PER_DEVICE = 4
DEFAULT_PER_SOURCE = 16  # per host (IPv4 address, IPv6 /64)
DEFAULT_TOTAL = 10_000


@dataclass(eq=False, slots=True)
class Observation:  # one per observer: 100,000 of them at most (--observe-max)
    device_id: str
    source: bytes  # host prefix, for the per-source cap
    remote: Any  # the full socket address notifications go to
    token: bytes
    ancdata: list
    expires: float
    seq: int = 0
    mid: int = -1  # message id of the last notification, to match a Reset


class Observations:
    def __init__(self, per_device: int = DEFAULT_PER_DEVICE, per_source: int = DEFAULT_PER_SOURCE,
                 total: int = DEFAULT_TOTAL, lifetime: float = DEFAULT_LIFETIME, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_device, self.per_source, self.total = per_device, per_source, total
        self.lifetime = lifetime
        self.clock = clock
        self._by_device: dict[str, list[Observation]] = {}  # a list: most devices have one
        self._by_source: dict[bytes, dict[tuple[Any, bytes], Observation]] = {}
        #: every observation, oldest (re-)registration first: as they all live ``lifetime``,
        #: that is expiry order, and expire() stops at the first one still alive
        self._by_age: dict[tuple[Any, bytes], Observation] = {}
        #: the few distinct ancillary data lists (the local address a request came to), shared
        #: by the observations instead of one copy each (~180 bytes of 100,000)
        self._ancdata: dict[tuple[Any, ...], list] = {}
        self._count = 0
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def register(self, device_id: str, source: bytes, remote: Any, token: bytes,
                 ancdata: list) -> Observation | None:
        """Add or refresh the observation (remote, token); None if a cap says no."""
        key = (remote, token)
        mine = self._by_source.get(source, {})
        old = mine.get(key)
        if old is not None and old.device_id != device_id:
            self._remove(old)  # the same token now observes another resource
            old = None
        now = self.clock()
        if old is not None:
            old.expires = now + self.lifetime
            del self._by_age[key]
            self._by_age[key] = old  # the youngest now
            return old
        if (self._count >= self.total or len(mine) >= self.per_source
                or len(self._by_device.get(device_id, ())) >= self.per_device):
            self.refused += 1
            return None
        shared = self._ancdata.get(tuple(ancdata))
        if shared is None:
            if len(self._ancdata) >= 64:
                self._ancdata.clear()
            shared = self._ancdata[tuple(ancdata)] = ancdata
        obs = Observation(device_id, source, remote, token, shared, now + self.lifetime)
        self._by_device.setdefault(device_id, []).append(obs)
        self._by_source.setdefault(source, {})[key] = obs
        self._by_age[key] = obs
        self._count += 1
        return obs

    def deregister(self, source: bytes, remote: Any, token: bytes) -> None:
        obs = self._by_source.get(source, {}).get((remote, token))
        if obs is not None:
            self._remove(obs)

    def reset(self, source: bytes, remote: Any, mid: int) -> bool:
        """A Reset from ``remote`` with message id ``mid``: end the observation it refuses."""
        for obs in list(self._by_source.get(source, {}).values()):
            if obs.remote == remote and obs.mid == mid:
                self._remove(obs)
                return True
        return False

    def watched(self, device_id: str) -> bool:
        """Whether the device may have an observer (expired ones included)."""
        return device_id in self._by_device

    def of(self, device_id: str) -> Iterator[Observation]:
        """The live observations of a device (expired ones are dropped on the way)."""
        now = self.clock()
        for obs in list(self._by_device.get(device_id, ())):
            if obs.expires <= now:
                self._remove(obs)
            else:
                yield obs

    def expire(self) -> None:
        """Drop the expired observations: only those (not a walk over all 100,000)."""
        now = self.clock()
        while self._by_age:
            obs = next(iter(self._by_age.values()))
            if obs.expires > now:
                return
            self._remove(obs)

    def _remove(self, obs: Observation) -> None:
        key = (obs.remote, obs.token)
        self._by_age.pop(key, None)
        mine = self._by_device.get(obs.device_id)
        if mine is not None and obs in mine:
            mine.remove(obs)
            if not mine:
                del self._by_device[obs.device_id]
        group = self._by_source.get(obs.source)
        if group is not None and group.pop(key, None) is obs:
            if not group:
                del self._by_source[obs.source]
        self._count -= 1
