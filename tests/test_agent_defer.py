"""A device defers an update itself (low battery) and takes it when it can: real gateway, real cc."""

from __future__ import annotations

from pathlib import Path

from test_agent_e2e import Ops, image_bytes, job_of, spec, started


async def test_low_battery_defers_then_updates(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    image = await ops.image(image_bytes(20_000, 11), 2)
    battery = {"asked": 0}

    def may_update() -> bool:  # the first two offers find the battery low
        battery["asked"] += 1
        return battery["asked"] > 2

    sp = spec(tmp_path, "solar-1", [trust], version=1, extra={"may_update": may_update})
    async with started(ops, [sp], gateway.device_port) as run:
        rc, camp = await ops.upgrade(image["id"], "--defer", "1")
    assert rc == 0, camp
    assert job_of(camp, "solar-1")["state"] == "succeeded"
    assert battery["asked"] == 3
    assert run.devices[0].agent.seq == 2
    dev = await ops.json("device", "show", "solar-1")
    kinds = [(e["kind"], e["detail"]) for e in dev["events"]]
    assert any("deferred" in str(k) for k in kinds), kinds
