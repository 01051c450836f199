"""The boot check at every power-loss window of docs/device.md ("Flash states and power loss").

Each test builds the flash state of one window (slot files, boot.json, the agent's state file),
powers the device on (``FileSlots.boot()`` plays the bootloader) and runs a wake with the
network down (every exchange fails: the sans-IO agent gets None), then checks what the agent
decided and what it kept to report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from device import agent as agent_mod
from device.agent import Agent
from device.slots import FileSlots
from device.state import Store
from proto.codes import Result, State

IMAGE = b"new application\n" * 100


def config(**kw: Any) -> dict[str, Any]:
    c = {"id": "boot-1", "class": "c", "trust": ["00" * 32], "version": 1, "max_failures": 2}
    c.update(kw)
    return c


def offline_wake(agent: Agent) -> tuple[Any, int]:
    """Run one wake with every exchange failing; (what it returned, requests it made)."""
    gen = agent.wake()
    n = 0
    try:
        gen.send(None)
        n += 1
        while n < 50:
            gen.send(None)
            n += 1
    except StopIteration as e:
        return e.value, n
    raise AssertionError("the wake never ended")


def flash(tmp: Path, state: int, *, pending: bool, boot: bool, **extra: Any) -> tuple[FileSlots, Store]:
    """Slot B holds the new image; the state file says ``state``; optionally B is pending."""
    root = str(tmp / "slots")
    slots = FileSlots(root)
    slots.open(len(IMAGE), 0)
    slots.write(IMAGE)
    slots.sync()
    if pending:
        slots.set_pending()
    store = Store(str(tmp / "state.json"))
    s = {"seq": 1, "state": state, "result": 0, "job": 7, "unsent": False, "offset": len(IMAGE),
         "img": {"seq": 2, "digest": hashlib.sha256(IMAGE).hexdigest(), "size": len(IMAGE),
                 "uri": "/f/00000000", "etag": None, "slot": "b"}}
    s.update(extra)
    store.save(s)
    slots = FileSlots(root)
    if boot:
        slots.boot()
    return slots, store


def power_on(tmp: Path) -> FileSlots:
    slots = FileSlots(str(tmp / "slots"))
    slots.boot()
    return slots


def test_window_5_pending_but_state_still_downloaded_completes_the_install(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.DOWNLOADED, pending=True, boot=True)
    a = Agent(config(), slots, store)
    out, _ = offline_wake(a)
    assert out == (agent_mod.SLEEP, 60)
    assert (a.seq, a.state, a.s["result"], a.s["job"], a.s["unsent"]) == \
        (2, State.IDLE, Result.SUCCESS, 7, True)
    assert power_on(tmp_path).running() == "b"  # confirmed: stays


def test_window_4_downloaded_not_yet_pending_installs_and_reboots(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.DOWNLOADED, pending=False, boot=True)
    a = Agent(config(), slots, store)
    out, n = offline_wake(a)
    assert out == (agent_mod.REBOOT, 0) and a.state == State.UPDATING
    assert slots.next_boot() == "b" and power_on(tmp_path).running() == "b"


def test_window_6_installed_without_reset_reboots_at_once(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=False, boots=0)
    a = Agent(config(), slots, store)
    assert offline_wake(a) == ((agent_mod.REBOOT, 0), 0)


def test_window_7_bootloader_went_back_reports_rolled_back(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True, boots=1, since=0)
    slots = power_on(tmp_path)  # second boot without a confirm: the bootloader goes back to A
    assert slots.running() == "a"
    a = Agent(config(), slots, store)
    offline_wake(a)
    assert (a.seq, a.state, a.s["result"], a.s["unsent"]) == (1, State.IDLE, Result.ROLLED_BACK, True)


def test_window_7_booted_twice_without_bootloader_rollback_the_agent_rolls_back(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True)
    Agent(config(self_test=lambda s: None), slots, store)._boot_check()  # first boot: undecided
    # the board resets while B is on trial, and this bootloader boots B again
    a = Agent(config(), FileSlots(str(tmp_path / "slots")), store)
    out, n = offline_wake(a)
    assert out == (agent_mod.REBOOT, 0) and n == 0
    assert (a.state, a.s["result"]) == (State.IDLE, Result.ROLLED_BACK)
    assert power_on(tmp_path).running() == "a"


def test_window_8_confirming_saved_but_slots_not_confirmed(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True, boots=1, since=0,
                         confirming=True)
    slots = power_on(tmp_path)  # the confirm never reached boot.json: back to A
    a = Agent(config(), slots, store)
    offline_wake(a)
    assert (a.seq, a.s["result"]) == (1, Result.ROLLED_BACK) and slots.running() == "a"


def test_window_9_confirmed_slots_but_state_not_final(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True, boots=1, since=0,
                         confirming=True)
    slots.confirm()
    a = Agent(config(self_test=lambda s: False), power_on(tmp_path), store)  # not asked again
    offline_wake(a)
    assert (a.seq, a.state, a.s["result"]) == (2, State.IDLE, Result.SUCCESS)
    assert "confirming" not in Store(str(tmp_path / "state.json")).load()


def test_window_10_failed_self_test_rolls_back_and_reboots(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True)
    a = Agent(config(self_test=lambda s: False), slots, store)
    assert offline_wake(a) == ((agent_mod.REBOOT, 0), 0)
    assert power_on(tmp_path).running() == "a"
    a = Agent(config(), FileSlots(str(tmp_path / "slots")), store)
    assert (a.seq, a.state, a.s["result"], a.s["unsent"]) == (1, State.IDLE, Result.ROLLED_BACK, True)


def test_undecided_self_test_rolls_back_when_the_deadline_passes(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True)
    now = [1000.0]
    a = Agent(config(self_test=lambda s: None, confirm_s=30), slots, store, clock=lambda: now[0])
    out, n = offline_wake(a)
    assert out[0] == agent_mod.SLEEP and a.state == State.UPDATING and n == 2  # reported, waits
    now[0] += 29
    assert offline_wake(a)[0][0] == agent_mod.SLEEP and a.state == State.UPDATING
    now[0] += 2
    assert offline_wake(a) == ((agent_mod.REBOOT, 0), 0)
    assert a.s["result"] == Result.ROLLED_BACK


def test_window_11_an_undelivered_outcome_is_kept(tmp_path: Path) -> None:
    slots, store = flash(tmp_path, State.UPDATING, pending=True, boot=True)
    a = Agent(config(), slots, store)
    offline_wake(a)  # confirmed, but the success report never got through
    a = Agent(config(), power_on(tmp_path), Store(str(tmp_path / "state.json")))
    assert a.s["unsent"] and a.status()[3] == 2 and a.status()[7] == 7  # seq 2, job 7
