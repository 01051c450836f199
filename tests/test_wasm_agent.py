"""The agent's whole update flow under MicroPython (the WebAssembly port), with its heap measured.

MicroPython runs the unchanged ``device`` package on FileSlots in its in-memory file system.
The gateway is played by a link object inside the MicroPython program: it answers the first
report with an UPDATE command (made and signed here on CPython by the contract code), serves
the image as Block2 responses (content computed from the offset: the image is never in RAM on
either side) and records the reports. After the install the program "reboots" (a fresh
``FileSlots.boot()`` and ``Agent`` on the same files) and the agent confirms.

Measuring the heap: this port's garbage collector frees nothing while a top-level ``runPython``
call is running (it cannot scan the WebAssembly stack), so ``gc.collect()`` inside one program
measures allocations, not live memory. The runner below therefore steps the agent from
JavaScript, one CoAP exchange per ``runPython`` call, and collects between calls. For every
step: live heap before it (after a collection) plus everything allocated during it (nothing is
freed within a call) is an upper bound of the heap in use during that step. The bound over the
download steps is the figure ``docs/device.md`` reports; the step that checks the manifest
(Ed25519 in pure Python) is reported on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import manifest, uris
from proto.codes import Op, Result, State
from proto.keys import CmdKey

REPO = Path(__file__).resolve().parent.parent
PORT = "@micropython/micropython-webassembly-pyscript/micropython.mjs"
CANDIDATES = [REPO / "node_modules" / PORT, Path("/tmp/npmtest/node_modules") / PORT]
SIZE = 64 * 1024 + 300
CLASS = "wasm-board"


def wasm_port() -> Path | None:
    env = os.environ.get("MPY_WASM")
    for p in ([Path(env)] if env else []) + CANDIDATES:
        if p.exists():
            return p
    return None


pytestmark = pytest.mark.skipif(shutil.which("node") is None or wasm_port() is None,
                                reason="node and the MicroPython WebAssembly port are needed "
                                       "(scripts/setup installs them)")

RUNNER = r"""
import { loadMicroPython } from %(port)s;
import fs from "fs";
const job = JSON.parse(fs.readFileSync(0, "utf8"));
let out = "";
const mp = await loadMicroPython({ stdout: (t) => { out += t + "\n"; },
                                   stderr: (t) => { out += t + "\n"; } });
mp.FS.mkdir("/lib"); mp.FS.mkdir("/lib/device");
for (const f of fs.readdirSync(job.device)) {
  if (f.endsWith(".py")) mp.FS.writeFile("/lib/device/" + f, fs.readFileSync(job.device + "/" + f));
}
try {
  mp.runPython("import sys\nsys.path.insert(0, '/lib')\n" + job.setup);
  for (let i = 0; i < job.max_steps; i++) {
    mp.runPython("gc.collect()\n_before()");
    mp.runPython("_step()\n_after()");  // same call: nothing is freed before _after reads
    if (out.includes("__DONE__")) break;
  }
  mp.runPython(job.finish);
} catch (e) { out += "EXC " + e.message + "\n"; }
process.stdout.write(out);
"""

SETUP = r"""
import gc, os, json
gc.collect()
_m0 = gc.mem_alloc()
from device.agent import Agent, REBOOT
from device.slots import FileSlots
from device.state import Store
from device import coap

SIZE = %(size)d
COMMAND = bytes.fromhex(%(command)r)
CONFIG = json.loads(%(config)r)

class R:
    # A response as the CoAP core hands it over (the agent reads only these attributes).
    def __init__(self, code, payload=b"", etag=None, block2=None, size2=None):
        self.code = code
        self.payload = payload
        self.etag = etag
        self.block2 = block2
        self.size2 = size2
        self.max_age = None

class Gateway:
    def __init__(self):
        self.reports = 0
        self.blocks = 0

    def request(self, req):
        if req.path.strip("/") == "r":
            self.reports += 1
            return R(0x44, COMMAND if self.reports == 1 else b"")
        num, szx = req.block2
        bs = 16 << szx
        off = num * bs
        n = min(bs, SIZE - off)
        data = bytes(((off + j) * 7 + (off + j) // 251) & 0xFF for j in range(n))
        self.blocks += 1
        return R(0x45, data, b"\x01\x02\x03\x04\x05\x06\x07\x08", (num, off + n < SIZE, szx), SIZE)

try:
    os.mkdir("/fota")
except OSError:
    pass
GW = Gateway()

def _power_on():
    global slots, agent, wake, req, kind
    slots = FileSlots("/fota/slots")
    slots.boot()
    agent = Agent(CONFIG, slots, Store("/fota/state.json"))
    wake = agent.wake()
    req = None
    kind = "boot"

_power_on()
gc.collect()
imports = gc.mem_alloc() - _m0
_done = False
outcomes = []
# running maxima (no growing list: the measurement must not inflate what it measures)
M = {"baseline": -1, "steps": 0, "block_live_max": 0, "block_bound_max": 0,
     "block_alloc_max": 0, "bound_max": 0, "alloc_max": 0}
_live = 0

def _before():
    global _live
    _live = gc.mem_alloc()

def _step():
    # One exchange: the agent makes a request (or finishes its wake), the gateway answers.
    global req, kind, _done
    if _done:
        return
    try:
        req = wake.send(None) if req is None else wake.send(GW.request(req))
        kind = "block" if req.block2 is not None else "report"
    except StopIteration as e:
        outcomes.append(list(e.value))
        if e.value[0] == REBOOT:
            _power_on()
        else:
            _done = True
            print("__DONE__")

def _after():
    alloc = gc.mem_alloc() - _live
    bound = _live + max(alloc, 0)
    if M["baseline"] < 0:
        M["baseline"] = _live
    M["steps"] += 1
    M["bound_max"] = max(M["bound_max"], bound)
    M["alloc_max"] = max(M["alloc_max"], alloc)
    if kind == "block":
        M["block_live_max"] = max(M["block_live_max"], _live)
        M["block_bound_max"] = max(M["block_bound_max"], bound)
        M["block_alloc_max"] = max(M["block_alloc_max"], alloc)
"""

FINISH = r"""
gc.collect()
M.update({
    "outcomes": outcomes, "seq": agent.seq, "state": agent.state,
    "result": agent.s["result"], "running": slots.running(), "blocks": GW.blocks,
    "reports": GW.reports, "imports": imports,
    "slot_size": os.stat(slots.path(slots.running()))[6],
})
print("RESULT " + json.dumps(M))
"""


def image_at(offset: int, n: int) -> bytes:
    return bytes(((offset + j) * 7 + (offset + j) // 251) & 0xFF for j in range(n))


def run_update(tmp: Path, block: int) -> dict:
    key = Ed25519PrivateKey.generate()
    digest = hashlib.sha256(image_at(0, SIZE)).digest()
    signed = manifest.sign(manifest.build(seq=2, vendor=manifest.DEFAULT_VENDOR,
                                          device_class=CLASS, digest=digest, size=SIZE,
                                          uri=uris.image_path(digest)), key)
    command = cbor2.dumps({CmdKey.OP: Op.UPDATE, CmdKey.JOB: 3, CmdKey.MANIFEST: signed})
    config = {"id": "wasm-1", "class": CLASS, "version": 1, "block_size": block,
              "trust": [manifest.public_bytes(key.public_key()).hex()],
              # this port has no hashlib.sha1: the ids come precomputed
              "vendor_id": manifest.vendor_id(manifest.DEFAULT_VENDOR).hex(),
              "class_id": manifest.class_id(manifest.DEFAULT_VENDOR, CLASS).hex()}
    runner = tmp / "runner.mjs"
    runner.write_text(RUNNER % {"port": json.dumps(str(wasm_port()))})
    job = {"device": os.environ.get("MPY_DEVICE_DIR", str(REPO / "device")),
           "setup": SETUP % {"size": SIZE, "command": command.hex(), "config": json.dumps(config)},
           "finish": FINISH, "max_steps": SIZE // 16 + 50}
    p = subprocess.run(["node", str(runner)], input=json.dumps(job), capture_output=True,
                       text=True, timeout=120)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, p.stdout + p.stderr
    return json.loads(lines[-1][len("RESULT "):])


def test_update_flow_under_micropython_and_its_heap(tmp_path: Path) -> None:
    block = 1024
    r = run_update(tmp_path, block)
    assert r["outcomes"] == [["reboot", 0], ["sleep", 60]], r
    assert (r["seq"], r["state"], r["result"], r["running"]) == (2, State.IDLE, Result.SUCCESS, "b")
    assert r["slot_size"] == SIZE and r["blocks"] == -(-SIZE // block)
    base = r["baseline"]
    print(f"\nMicroPython heap, {block} B blocks: idle agent {base} B live (modules included); "
          f"above it during the download at most {r['block_bound_max'] - base} B (live between "
          f"blocks +{r['block_live_max'] - base} B, allocated within one block exchange at most "
          f"{r['block_alloc_max']} B); whole update, manifest check included, at most "
          f"+{r['bound_max'] - base} B")
    assert r["block_bound_max"] - base < 32 * 1024, r


LOSSY = r"""
import os, json
from device import coap
from device.agent import Agent, REBOOT
from device.slots import FileSlots
from device.state import Store
from fakelink import LossyLink, block_server

SIZE = %(size)d
IMAGE = bytes(((j * 7) + j // 251) & 0xFF for j in range(SIZE))  # the server's copy
COMMAND = bytes.fromhex(%(command)r)
CONFIG = json.loads(%(config)r)
blocks = block_server(IMAGE, b"\x01\x02\x03\x04\x05\x06\x07\x08")
reports = []

def gateway(m):
    path = "/".join(bytes(v).decode() for n, v in m.options if n == coap.URI_PATH)
    if path == "r":
        reports.append(m.payload)
        return coap.code(2, 4), [], COMMAND if len(reports) == 1 else b""
    return blocks(m)

link = LossyLink(gateway, loss=0.2, seed=5, ack_timeout_ms=2000)
try:
    os.mkdir("/fota")
except OSError:
    pass
outcomes = []
for boot in range(3):
    slots = FileSlots("/fota/slots")
    slots.boot()
    agent = Agent(CONFIG, slots, Store("/fota/state.json"))
    for wake in range(20):
        out = coap.run(agent.wake(), link)
        outcomes.append(out[0])
        if out[0] == REBOOT or (agent.seq == 2 and not agent.s["unsent"]):
            break
    if agent.seq == 2 and not agent.s["unsent"]:
        break
f = open(slots.path(slots.running()), "rb")
same = f.read() == IMAGE
f.close()
print("RESULT " + json.dumps({"seq": agent.seq, "result": agent.s["result"], "same": same,
    "outcomes": outcomes, "stats": link.stats, "virtual_ms": link.now}))
"""


def test_update_over_a_lossy_link_under_micropython() -> None:
    """coap.run with the device core's real Exchange over 20 % loss (virtual time), in the
    tests/mpy.py runner with its lossy in-process link."""
    mpy = pytest.importorskip("mpy")
    size = 24 * 1024 + 5
    key = Ed25519PrivateKey.generate()
    image = bytes(((j * 7) + j // 251) & 0xFF for j in range(size))
    digest = hashlib.sha256(image).digest()
    signed = manifest.sign(manifest.build(seq=2, vendor=manifest.DEFAULT_VENDOR,
                                          device_class=CLASS, digest=digest, size=size,
                                          uri=uris.image_path(digest)), key)
    command = cbor2.dumps({CmdKey.OP: Op.UPDATE, CmdKey.JOB: 4, CmdKey.MANIFEST: signed})
    config = {"id": "wasm-2", "class": CLASS, "version": 1, "block_size": 512,
              "max_failures": 6, "trust": [manifest.public_bytes(key.public_key()).hex()],
              "vendor_id": manifest.vendor_id(manifest.DEFAULT_VENDOR).hex(),
              "class_id": manifest.class_id(manifest.DEFAULT_VENDOR, CLASS).hex()}
    out = mpy.run_mpy(LOSSY % {"size": size, "command": command.hex(),
                               "config": json.dumps(config)}, timeout=120)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out
    r = json.loads(lines[-1][len("RESULT "):])
    assert (r["seq"], r["result"], r["same"]) == (2, Result.SUCCESS, True), r
    assert "reboot" in r["outcomes"]
    assert r["stats"]["dropped"] > 0 and r["stats"]["retransmits"] > 0, r["stats"]
