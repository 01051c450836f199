"""The real agent with a report key (config "key", "counter_file") against a gateway run with
--enrolled-only: enrolled with `cc devices add --key`, it is upgraded as usual; a device with
the wrong key gets nowhere and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from harness import GatewayProc
from test_agent_e2e import CLASS, Ops, image_bytes, spec, start_devices


async def test_keyed_devices_update_and_a_wrong_key_gets_nowhere(tmp_path: Path) -> None:
    gw = GatewayProc(tmp_path / "data", ["--enrolled-only"]).start()
    try:
        ops = Ops(gw, tmp_path)
        trust = await ops.keys()
        keys = {}
        for name in ("k-1", "k-2"):
            dev = await ops.json("devices", "add", name, "--class", CLASS, "--key")
            keys[name] = dev["key"]
        specs = [spec(tmp_path, name, [trust],
                      extra={"key": keys[name],
                             "counter_file": str(tmp_path / "devices" / f"{name}.counter")})
                 for name in keys]
        imposter = spec(tmp_path, "k-3", [trust],
                        extra={"key": keys["k-1"], "counter_file": str(tmp_path / "k-3.ctr")})
        await ops.json("devices", "add", "k-3", "--class", CLASS, "--key")  # its own key
        run = start_devices([*specs, imposter], gw.device_port)
        try:
            await ops.wait_registered(["k-1", "k-2"])
            image = await ops.image(image_bytes(20_000, 1), seq=2)
            rc, out, err = await ops.cc("upgrade", image["id"], "--device", "k-1", "--device",
                                        "k-2", "--wait", "--json", timeout=90)
            camp = out or err
        finally:
            await run.stop()
        assert rc == 0, camp
        devices = {d["id"]: d for d in await ops.json("devices")}
        assert devices["k-1"]["seq"] == 2 and devices["k-2"]["seq"] == 2
        assert devices["k-3"]["last_seen"] is None  # every report it sent was refused
        assert "Traceback" not in gw.log_text()
    finally:
        assert gw.stop() == 0


class MemoryStore:
    """The agent's state kept in RAM (device/state.Store's interface), one per agent here."""

    path = ""  # no file: what goes next to the state (the Ed25519 tables) goes to the cwd

    def __init__(self) -> None:
        self._data = "{}"
        self.writes = 0

    def load(self) -> dict:
        return json.loads(self._data)

    def save(self, obj: dict) -> None:
        self._data = json.dumps(obj)
        self.writes += 1


def test_hostile_command_values_are_ignored(tmp_path: Path) -> None:
    """Found by feeding the agent generated commands: a DEFER could make a device sleep for
    ever (or on a non-number), a job id of another type made the state file unwritable. Now
    WAIT is capped at MAX_WAIT and only integers count, a non-integer job id is ignored."""
    import random

    from device import agent as agent_mod, command
    from device.slots import FileSlots

    slots = FileSlots(str(tmp_path / "slots"))
    Path(slots.path("a")).write_bytes(b"x" * 100)
    slots.boot()
    values = [None, True, -1, 0, 1, 3, 2**70, "x", b"y", [1], {1: 2}, 1.5, float("nan")]
    rng = random.Random(5)
    for _ in range(2000):
        a = agent_mod.Agent({"id": "d", "class": "c", "trust": [bytes(32)]}, slots,
                            MemoryStore())
        cmd = {k: rng.choice(values) for k in rng.sample([1, 2, 3, 4, 5], rng.randint(0, 4))}
        a._handle(cmd)  # never raises
        assert a.wait is None or (type(a.wait) is int and 0 <= a.wait <= command.MAX_WAIT)
        assert a.s["job"] is None or type(a.s["job"]) is int
