"""Power cuts for the CPython agent, in one place for every resume test.

A cut is what a rebooted board sees: the slot storage loses every write not yet ``sync``-ed (a
flash write cache), the agent object and its socket are dropped, and a fresh ``Agent`` boots on
the same files. The resume tests differ only in where the power goes (an exchange count, an
image offset, a gap in a window) and in what they count; ``PowerOns`` runs the boots.

    p = PowerOns(config, root, port)            # root/slots, root/state.json
    await p.run(lambda a: True)                 # one wake: the gateway learns the device
    await p.run(settled(2), exchange=hook)      # hook(link, req) may raise PowerCut
    p.agent, p.slots, p.boots, p.cuts, p.cut_boots, p.cut_offsets
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from device import agent as agent_mod
from device import coap
from device.agent import Agent
from device.slots import FileSlots
from device.state import Store
from sim.aio import AioLink

LO = "127.0.0.1"


class PowerCut(BaseException):
    """Not an Exception: no handler of the agent may see it, as none sees a power cut."""


class LossySlots(FileSlots):
    """FileSlots whose writes reach the file only at ``sync`` (or a read, which syncs);
    ``cut()`` drops the rest. The power goes at a write for which ``power_fails`` is True."""

    def open(self, size: int, offset: int = 0) -> None:
        super().open(size, offset)
        self._unsynced: list[tuple[int, bytes]] = []

    def power_fails(self, offset: int, n: int) -> bool:
        """Whether the power goes instead of writing ``n`` bytes at ``offset``."""
        return False

    def write(self, data: bytes) -> None:
        self.write_at(self._pos, data)

    def write_at(self, offset: int, data: bytes) -> None:
        if self.power_fails(offset, len(data)):
            raise PowerCut
        self._unsynced.append((offset, bytes(data)))
        self._pos = offset + len(data)  # where the next write() goes, as in FileSlots

    def sync(self) -> None:
        if self._f is not None:
            for offset, data in self._unsynced:
                self._f.seek(offset)
                self._f.write(data)
            self._unsynced.clear()
        super().sync()

    def cut(self) -> None:
        if self._f is not None:
            self._unsynced.clear()
            self._f.close()
            self._f = None


async def exchange(link: AioLink, req: Any) -> Any:
    """One step of a wake: a request, or a window (``device.burst.Window``) run to its end."""
    if isinstance(req, coap.Request):
        return await link.request(req)
    return await link.run(req)


Exchange = Callable[[AioLink, Any], Awaitable[Any]]


def settled(seq: int) -> Callable[[Agent], bool]:
    """Done: the agent runs ``seq``, idle, with every report sent."""
    return lambda a: a.seq == seq and a.state == 0 and not a.s["unsent"]


class PowerOns:
    """Boots a fresh Agent (and ``slots(path)``) on ``root`` until ``done(agent)`` after a wake
    that is not a reboot; a ``PowerCut`` from ``exchange`` or the slots drops the boot. Bounded
    by ``seconds`` and ``max_boots``: past either, AssertionError."""

    def __init__(self, config: dict[str, Any], root: Path, port: int, *,
                 slots: Callable[[str], LossySlots] = LossySlots,
                 ack_timeout: float = 1.0) -> None:
        self.config, self.root, self.port = config, root, port
        self.make_slots, self.ack_timeout = slots, ack_timeout
        self.boots = self.cuts = 0
        self.cut_boots: list[int] = []  # the boot number of each cut (1 = the first boot)
        self.cut_offsets: list[int] = []  # the agent's offset (in memory) at each cut
        self.agent: Agent | None = None
        self.slots: LossySlots | None = None

    async def run(self, done: Callable[[Agent], bool | Awaitable[bool]], *,
                  exchange: Exchange = exchange, seconds: float = 60,
                  max_boots: int = 500) -> Agent:
        deadline = time.monotonic() + seconds
        for _ in range(max_boots):
            if time.monotonic() > deadline:
                break
            action = await self._boot(exchange)
            if action is None or action == agent_mod.REBOOT:
                continue  # the power came back: boot again now
            finished = done(self.agent)
            if inspect.isawaitable(finished):
                finished = await finished
            if finished:
                return self.agent
            await asyncio.sleep(self.config["wake_s"])
        raise AssertionError(f"no end in {seconds} s or {max_boots} boots "
                             f"({self.boots} boots, {self.cuts} cuts)")

    async def _boot(self, exchange: Exchange) -> Any:
        """One wake on a fresh agent: its action, or None when the power went."""
        self.slots = slots = self.make_slots(str(self.root / "slots"))
        slots.boot()
        self.boots += 1
        self.agent = agent = Agent(self.config, slots, Store(str(self.root / "state.json")))
        link = await AioLink.open(LO, self.port, ack_timeout=self.ack_timeout)
        wake = agent.wake()
        try:
            req = next(wake)
            while True:
                req = wake.send(await exchange(link, req))
        except StopIteration as e:
            return e.value[0]
        except PowerCut:
            wake.close()
            slots.cut()
            self.cuts += 1
            self.cut_boots.append(self.boots)
            self.cut_offsets.append(agent.s["offset"])
            return None
        finally:
            link.close()
