"""Compressed images and deltas end to end (issue 12): the real gateway, the real ``cc``, the
CPython agent (sim.main.SimDevice) over real UDP. One fleet, one story:

seq 2: the new agent is offered a delta from seq 1, which its slot does not hold (a corrupt
base): integrity failure, and the gateway falls back to the full image (deflated) for it; the
old agent (no CAPS in its reports) gets the plain image. seq 3: a delta from seq 2 (a chain of
deltas runs on the real MicroPython port in tests/test_delta_upy.py).
"""

from __future__ import annotations

import random
from pathlib import Path

from proto.codes import JobState
from test_agent_e2e import Ops, job_of, spec, started


def release(base: bytes, seed: int, edits: int = 12) -> bytes:
    """A patch release of ``base``: a few small changes, one insertion, one deletion."""
    rnd = random.Random(seed)
    out = bytearray(base)
    for _ in range(edits):
        i = rnd.randrange(len(out) - 8)
        out[i:i + 4] = rnd.randbytes(4)
    i = rnd.randrange(len(out))
    out[i:i] = rnd.randbytes(300)
    i = rnd.randrange(len(out) - 200)
    del out[i:i + 200]
    return bytes(out)


def firmware_like(size: int) -> bytes:
    """Compressible like code: repeated instruction-like words with varying operands."""
    rnd = random.Random(size)
    words = [rnd.randbytes(4) for _ in range(64)]
    return b"".join(words[rnd.randrange(64)][:3] + bytes([rnd.randrange(16)])
                    for _ in range(size // 4))


async def test_full_then_delta_chain_with_fallback_and_an_old_agent(gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    trust = await ops.keys()
    v1 = firmware_like(120_000)
    v2 = release(v1, 2)
    v3 = release(v2, 3)
    await ops.image(v1, 1)
    new = spec(tmp_path, "new-agent", [trust], version=1)
    old = spec(tmp_path, "old-agent", [trust], version=1, extra={"caps": 0})
    sent = {}
    async with started(ops, [new, old], gateway.device_port) as run:
        for seq, data in ((2, v2), (3, v3)):
            image = await ops.image(data, seq)
            rc, camp = await ops.upgrade(image["id"])
            assert rc == 0, camp
            status = await ops.json("status", str(camp["id"]))
            sent[seq] = {d: (job_of(status, d)["sent"], job_of(status, d)["size"])
                         for d in (new.id, old.id)}
        deltas = await ops.json("firmware", "deltas")
    for d, want in ((run.devices[0], v3), (run.devices[1], v3)):
        assert d.agent is not None and d.agent.seq == 3
        assert Path(d.agent.slots.path(d.agent.slots.running())).read_bytes() == want
    # seq 2: the delta from seq 1 failed on the new agent (its slot never held seq 1): full,
    # deflated; the old agent announced nothing and got the plain image
    assert sent[2][new.id][0] == "deflate" and sent[2][new.id][1] < 0.9 * len(v2), sent
    assert sent[2][old.id] == ("full", len(v2)), sent
    for seq, data in ((3, v3),):
        assert sent[seq][new.id][0] == "delta" and sent[seq][new.id][1] < 0.05 * len(data), sent
        assert sent[seq][old.id] == ("full", len(data)), sent
    kinds = sorted((v["kind"], v["base"] is not None, v["signed"]) for v in deltas)
    assert kinds == [("deflate", False, True)] * 3 + [("delta", True, True)] * 3, deltas
