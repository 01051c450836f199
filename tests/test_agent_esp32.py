"""The agent on ESP32 OTA partitions (the rule-enforcing fake of test_slots_esp32), updated by
the real gateway: whole-sector writes, each sector erased once, the ESP-IDF bootloader's trial
boot and confirm, and a crash on trial rolled back by the bootloader."""

from __future__ import annotations

import time
from pathlib import Path

from device import agent as agent_mod
from device.agent import Agent
from device.esp32slots import Esp32Partitions
from device.state import Store
from sim.aio import AioLink, drive
from test_agent_e2e import CLASS, Ops, image_bytes
from test_slots_esp32 import SECTOR, Flash

SIZE = 100_000


async def run_board(ops: Ops, gw, flash: Flash, state: Path, config: dict, image_id: str,
                    crash_on_trial: bool = False) -> tuple[Agent, int]:
    """Wake the board until its job's outcome is delivered; reset() on REBOOT."""
    boots = 1
    started = False
    deadline = time.monotonic() + 30
    agent = Agent(config, Esp32Partitions(flash.partition_class()), Store(str(state)))
    while time.monotonic() < deadline:
        link = await AioLink.open("127.0.0.1", gw.device_port, ack_timeout=1.0)
        try:
            action, _ = await drive(agent.wake(), link)
        finally:
            link.close()
        if not started:
            rc, _, err = await ops.cc("upgrade", image_id, "--all")
            assert rc == 0, err
            started = True
            continue
        if action == agent_mod.REBOOT:
            flash.reset()
            boots += 1
            if crash_on_trial and flash.pending_verify:
                flash.reset()  # the new image crashes before the agent runs: watchdog reset
                boots += 1
            agent = Agent(config, Esp32Partitions(flash.partition_class()), Store(str(state)))
            continue
        if agent.state == 0 and agent.s["result"] != 0 and not agent.s["unsent"]:
            return agent, boots
    raise AssertionError(f"no outcome: {agent.s}")


async def test_update_on_esp32_partitions(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    data = image_bytes(SIZE, 21)
    image = await ops.image(data, 2)
    flash = Flash(slot_size=256 * 1024)
    config = {"id": "esp-1", "class": CLASS, "trust": [trust], "version": 1, "wake_s": 0.1}
    agent, boots = await run_board(ops, gateway, flash, tmp_path / "state.json", config,
                                   image["id"])
    assert (agent.seq, agent.s["result"]) == (2, 1)
    assert flash.running == "ota_1" and not flash.pending_verify  # confirmed
    assert bytes(flash.slots["ota_1"][:SIZE]) == data
    assert flash.erases == -(-SIZE // SECTOR), flash.erases  # every sector erased exactly once
    assert agent.store.writes <= 6, agent.store.writes  # the state file, after the reboot
    assert boots == 2


async def test_a_crash_on_trial_is_rolled_back_by_the_bootloader(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(20_000, 22), 2)
    flash = Flash(slot_size=64 * 1024)
    config = {"id": "esp-2", "class": CLASS, "trust": [trust], "version": 1, "wake_s": 0.1}
    agent, boots = await run_board(ops, gateway, flash, tmp_path / "state.json", config,
                                   image["id"], crash_on_trial=True)
    assert (agent.seq, agent.s["result"]) == (1, 20)  # rolled back
    assert flash.running == "ota_0" and flash.boot == "ota_0" and boots == 3
    camp = await ops.json("status")
    got = await ops.json("status", str(camp[-1]["id"]))
    assert [(j["state"], j["result"]) for j in got["jobs"]] == [("failed", "rolled_back")]
