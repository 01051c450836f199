"""``device.board.run`` — the blocking loop a board runs — over the device core's real
``udp.UdpLink``, against the real gateway, upgraded by the real ``cc``. ``reset`` and ``sleep``
are the only board functions replaced (a CPython process cannot reset itself); the reboot
starts the loop again on the same files, as ``boot.py`` + ``main.py`` would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from device import board
from device.slots import FileSlots
from device.state import Store
from test_agent_e2e import CLASS, Ops, image_bytes


async def test_board_loop_over_udp_link(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    data = image_bytes(30_000, 31)
    image = await ops.image(data, 2)
    config = {"id": "board-1", "class": CLASS, "trust": [trust], "version": 1,
              "gateway": "127.0.0.1", "port": gateway.device_port, "wake_s": 0.1}
    resets: list[float] = []

    def power_on_and_run(wakes: int) -> tuple[str, float]:
        slots = FileSlots(str(tmp_path / "slots"))
        slots.boot()
        return board.run(config, slots=slots, store=Store(str(tmp_path / "state.json")),
                         reset=lambda: resets.append(time.monotonic()), sleep=time.sleep,
                         wakes=wakes)

    out = await asyncio.to_thread(power_on_and_run, 1)  # first report registers the board
    assert out[0] == "sleep"
    rc, _, err = await ops.cc("upgrade", image["id"], "--all")
    assert rc == 0, err
    out = await asyncio.to_thread(power_on_and_run, 20)
    assert out == ("reboot", 0) and len(resets) == 1
    out = await asyncio.to_thread(power_on_and_run, 2)  # after the reset: confirm, report
    assert out[0] == "sleep"
    state = Store(str(tmp_path / "state.json")).load()
    assert (state["seq"], state["result"], state["unsent"]) == (2, 1, False)
    slots = FileSlots(str(tmp_path / "slots"))
    assert Path(slots.path(slots.running())).read_bytes() == data
    camps = await ops.json("status")
    camp = await ops.json("status", str(camps[-1]["id"]))
    assert [(j["state"], j["result"]) for j in camp["jobs"]] == [("succeeded", "success")]


def test_board_link_takes_the_configured_ack_timeout() -> None:
    default = board.make_link({"gateway": "127.0.0.1", "port": 5683})
    tuned = board.make_link({"gateway": "127.0.0.1", "port": 5683, "ack_timeout_ms": 300})
    try:
        assert (default.ack_timeout_ms, tuned.ack_timeout_ms) == (2000, 300)
    finally:
        default.close()
        tuned.close()
