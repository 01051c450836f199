"""The agent's RAM on the real MicroPython unix port (64-bit), anchor and now in one run.

For each agent source (``--anchor REV``'s ``device/``, default main before this session's
heap work, and the working tree's) it provisions board directories
(``cc.provision.write_board``: ``.mpy`` by mpy-cross), runs them against a real gateway as
``micropython -X heapsize=N`` processes (real UDP), and prints:

- the smallest heap for a full update (report, verify, download 48 KiB, install, reboot,
  confirm): binary search on ``-X heapsize`` in 256 B steps, each probe a fresh device; once
  with no out-of-RAM allowed on the way (the sense of tests/upy.HEAP_BUDGET), once letting
  the agent resume after one at a later wake;
- the idle agent's live heap (after a collection, the agent constructed, no wake yet);
- where a short heap runs out (the phase the agent reports; the first anchor crashes instead);
- the live heap per phase of one full update in 99 KiB (``PROBE``: after a collection at every
  exchange, datagram and install, the largest per phase; for verify, at the entry of
  ``ed25519.verify``, to which the verify's own peak adds);
- one Ed25519 verify: time (mean of 20; noisy under load), instructions (callgrind, when
  valgrind is installed: the figure load does not blur), total allocation (collector off)
  and the smallest extra heap it runs in above its imports (binary search);
- the ``.mpy`` size of the agent.

The driver is the same for both sources (``DRIVER`` below: the agent over ``board.make_link``,
one process per power-on, exit 75 for a reboot) so the figures compare. Images are raw bytes
on plain file slots (the anchor has no bundles).

    python bench/footprint.py                 # ~3 min idle
    python bench/footprint.py --anchor HEAD~3 --size 65536
    python bench/footprint.py --verify-only       # the Ed25519 rows and the .mpy size
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from harness import GatewayProc  # noqa: E402
from upy import CC, MICROPYTHON  # noqa: E402

from cc.provision import compile_agent, write_board, write_tables  # noqa: E402
from proto import manifest as pm  # noqa: E402

ANCHORS = ("54b1e10",)  # main before this session's heap work
CLASS = "footprint"
PHASES = {1: "boot", 2: "report", 3: "verify", 4: "download", 5: "install"}

SETUP = r"""
import gc, json, sys
sys.path[0] = ""  # as main.py does: modules by relative path, as on a board (not the board
# directory's absolute path, which each loaded module would intern for good)
from fota import coap, board
from fota.agent import Agent
from fota.slots import FileSlots
from fota.state import Store
cfg = json.load(open("fota.json"))
slots = FileSlots(cfg["slots_dir"])
if cfg.get("boot"):
    slots.boot()
link = board.make_link(cfg)
agent = Agent(cfg, slots, Store(cfg["state"]))
"""

DRIVER = SETUP + r"""
gc.collect()
print("IDLE", gc.mem_alloc())
n = 0
for i in range(cfg["wakes"]):
    out = coap.run(agent.wake(), link)
    if getattr(agent, "ooms", 0) > n:
        n = agent.ooms
        print("OOM", agent.oom_phase)
    if out[0] == "reboot":
        sys.exit(75)
"""

# The same driver, sampling the live heap per phase (the agent's ``phase``) after a collection
# at every exchange, datagram and install; ``note`` is also called at the entry of
# ``ed25519.verify`` (a hook put into the provisioned copy: the module is imported and dropped
# by the agent itself).
PROBE = SETUP + r"""
peak = {}
def note():
    gc.collect()
    m = gc.mem_alloc()
    p = getattr(agent, "phase", 0)
    if m > peak.get(p, 0):
        peak[p] = m
def wrap(f):
    def w(x):
        note()
        x = f(x)
        note()
        return x
    return w
for name in ("request", "_recv"):  # not "run": a wrapper of it left the window reachable
    # from the C stack (the collector scans it conservatively) and inflated later phases
    if hasattr(link, name):
        setattr(link, name, wrap(getattr(link, name)))
_install = slots.set_pending
def set_pending():
    note()
    return _install()
slots.set_pending = set_pending
for i in range(cfg["wakes"]):
    out = coap.run(agent.wake(), link)
    note()
    if out[0] == "reboot":
        break
print("PEAK", json.dumps(peak))
if out[0] == "reboot":
    sys.exit(75)
"""
HOOK = (r"(def verify\([^)]*\):\n)", r"\1    __import__('__main__').note()\n")  # re.sub

VERIFY = r"""
import gc, time, binascii
from fota import ed25519
pub = binascii.unhexlify("%(pub)s")
msg = binascii.unhexlify("%(msg)s")
sig = binascii.unhexlify("%(sig)s")
gc.collect()
base = gc.mem_alloc()
if %(mode)r == "alloc":
    gc.disable()
    a = gc.mem_alloc()
    assert ed25519.verify(pub, msg, sig%(tables)s)
    print("ALLOC", gc.mem_alloc() - a)
elif %(mode)r in ("count", "base"):
    for _ in range(5 if %(mode)r == "count" else 0):
        assert ed25519.verify(pub, msg, sig%(tables)s)
elif %(mode)r in ("time", "first"):
    t = time.ticks_us()
    n = 20 if %(mode)r == "time" else 1
    for _ in range(n):
        assert ed25519.verify(pub, msg, sig%(tables)s)
    print("US", time.ticks_diff(time.ticks_us(), t) // n)
else:
    print("BASE", base)
    assert ed25519.verify(pub, msg, sig%(tables)s)
    print("OK")
"""


FOLD: dict[Path, bool] = {}  # source -> provisioned with const.py folded in (cc/constfold.py)
LINES: dict[Path, bool] = {}  # source -> provisioned with line numbers (before provisioning
# dropped them: cc/provision.NO_LINES)


def source_of(rev: str, into: Path) -> Path:
    """``device/`` at git revision ``rev`` (the working tree for "now"), provisioned as that
    revision did: with const.py folded into the modules from the revision that has
    cc/constfold.py on."""
    if rev == "now":
        shutil.copytree(REPO / "device", into / "device")  # a snapshot: edits during a run
        FOLD[into / "device"] = True
        LINES[into / "device"] = False
        return into / "device"
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "device"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        t.extractall(into, filter="data")
    FOLD[into / "device"] = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{rev}:cc/constfold.py"],
        capture_output=True).returncode == 0
    LINES[into / "device"] = "no-source-lines" not in subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:cc/provision.py"], capture_output=True,
        text=True).stdout
    return into / "device"


class Bench:
    def __init__(self, gw: GatewayProc, tmp: Path, size: int) -> None:
        self.gw, self.tmp = gw, tmp
        self.cc = CC(gw, tmp)
        self.trust = self.cc.keys()
        data = hashlib.sha256(b"footprint").digest() * (size // 32 + 1)
        self.image = self.cc.firmware(data[:size], seq=2, device_class=CLASS)
        self.n = 0

    def board(self, source: Path, driver: str = DRIVER) -> tuple[Path, str]:
        self.n += 1
        dev = f"fp-{self.n}"
        root = self.tmp / dev
        write_board(root, {"id": dev, "class": CLASS, "trust": [self.trust], "gateway": "127.0.0.1",
                           "port": self.gw.device_port, "version": 1, "wake_s": 0.01,
                           "ack_timeout_ms": 300, "slots_dir": "slots", "state": "state.json",
                           "bundles": False}, source=source, fold=FOLD[source],
                    lines=LINES[source])
        (root / "drive.py").write_text(driver)
        return root, dev

    def run(self, root: Path, heap: int, wakes: int, boot: bool) -> tuple[int, str]:
        cfg = json.loads((root / "fota.json").read_text())
        cfg.update(wakes=wakes, boot=boot)
        (root / "fota.json").write_text(json.dumps(cfg))
        p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "drive.py"], cwd=root,
                           capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout + p.stderr

    def update(self, source: Path, heap: int) -> tuple[bool, list[str], int | None]:
        """One device, a full update at ``heap`` bytes: (succeeded, OOM phases, idle live)."""
        root, dev = self.board(source)
        rc, out = self.run(root, 1 << 20, 1, True)  # registers (with room to spare)
        assert rc == 0, out
        self.cc.upgrade(self.image["id"], dev)
        phases: list[str] = []
        idle = None
        boot = False
        for _ in range(6):
            rc, out = self.run(root, heap, 3, boot)
            for line in out.splitlines():
                if line.startswith("OOM "):
                    phases.append(PHASES.get(int(line.split()[1]), line))
                if line.startswith("IDLE ") and idle is None:
                    idle = int(line.split()[1])
            if rc not in (0, 75):
                last = [x for x in out.splitlines() if x.strip()][-3:]
                phases.append("crash: " + " / ".join(s.strip() for s in last))
                return False, phases, idle
            boot = rc == 75
            state = json.loads((root / "state.json").read_text()) if (root / "state.json").exists() else {}
            if state.get("seq") == 2 and not state.get("unsent"):
                return True, phases, idle
        return False, phases or ["not done in 6 power-ons"], idle

    def phases(self, source: Path, heap: int = 99 * 1024) -> dict[int, int]:
        """Live heap per phase (bytes) over one full update (``PROBE``), in ``heap`` bytes: under
        100 KiB so that an agent that announces decoders by heap size asks for a plain image."""
        hooked = self.tmp / f"hooked-{self.n}"
        shutil.copytree(source, hooked)
        FOLD[hooked] = FOLD[source]
        LINES[hooked] = LINES[source]
        ed = hooked / "ed25519.py"
        ed.write_text(re.sub(*HOOK, ed.read_text(), count=1))
        root, dev = self.board(hooked, PROBE)
        rc, out = self.run(root, 1 << 20, 1, True)
        assert rc == 0, out
        self.cc.upgrade(self.image["id"], dev)
        peak: dict[int, int] = {}
        boot = False
        for _ in range(4):
            rc, out = self.run(root, heap, 3, boot)
            assert rc in (0, 75), out
            for line in out.splitlines():
                if line.startswith("PEAK "):
                    for k, v in json.loads(line[5:]).items():
                        peak[int(k)] = max(peak.get(int(k), 0), v)
            boot = rc == 75
            if not boot:
                break
        return peak

    def min_heap(self, source: Path, lo: int, hi: int, strict: bool = False,
                 step: int = 256) -> tuple[int, dict[int, list[str]]]:
        """The smallest heap (``step`` bytes apart) a full update succeeds in; ``strict``: with
        no out-of-RAM on the way (what tests/upy.HEAP_BUDGET means), else retries after an
        out-of-RAM count (the agent resumes at a later wake)."""
        seen: dict[int, list[str]] = {}
        ok, phases, _ = self.update(source, hi)
        assert ok and not (strict and phases), (hi, phases)
        while hi - lo > step:
            mid = (lo + hi) // 2 // step * step
            ok, phases, _ = self.update(source, mid)
            seen[mid] = phases
            if ok and not (strict and phases):
                hi = mid
            else:
                lo = mid
        return hi, seen


def verify_figures(source: Path, tmp: Path) -> dict[str, int]:
    out = tmp / "verify"
    compile_agent(out / "fota", source=source, lines=LINES[source])
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"footprint key").digest())
    signed = pm.sign(pm.build(seq=2, vendor=pm.DEFAULT_VENDOR, device_class=CLASS,
                              digest=bytes(32), size=1, uri="/f/00000000"), key)
    import cbor2

    tag = cbor2.loads(signed)
    protected, _, payload, sig = tag.value
    msg = cbor2.dumps(["Signature1", protected, b"", payload])
    args = {"pub": pm.public_bytes(key.public_key()).hex(), "msg": msg.hex(), "sig": sig.hex(),
            "tables": ""}
    if "def write_table" in (source / "ed25519.py").read_text():  # fixed-base tables on flash
        args["tables"] = ', "tables"'
        write_tables(out / "tables", [pm.public_bytes(key.public_key())])

    def go(mode: str, heap: str) -> tuple[int, str]:
        (out / "v.py").write_text(VERIFY % {**args, "mode": mode})
        p = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "v.py"], cwd=out,
                           capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout

    r: dict[str, int] = {}
    if shutil.which("valgrind"):  # instructions: the time figure that load does not blur
        counts = []
        for mode in ("count", "base"):
            (out / "v.py").write_text(VERIFY % {**args, "mode": mode})
            p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                MICROPYTHON, "-X", "heapsize=1m", "v.py"], cwd=out,
                               capture_output=True, text=True, timeout=600)
            counts.append(int(p.stderr.split("Collected :")[1].split()[0]))
        r["instr"] = (counts[0] - counts[1]) // 5
    _, o = go("alloc", "16m")
    r["alloc"] = int(o.split()[-1])
    _, o = go("time", "1m")
    r["us"] = int(o.split()[-1])
    if args["tables"]:  # the first verify with a new key and no B table: both written here
        shutil.move(out / "tables", out / "provisioned")
        _, o = go("first", "1m")
        r["first_us"] = int(o.split()[-1])
        shutil.rmtree(out / "tables")
        shutil.move(out / "provisioned", out / "tables")
    _, o = go("peak", "1m")
    base = int(o.split()[1])
    lo, hi = base, base + 256 * 1024
    while hi - lo > 256:
        mid = (lo + hi) // 2
        rc, o = go("peak", str(mid))
        if rc == 0 and "OK" in o:
            hi = mid
        else:
            lo = mid
    r["peak"] = hi - base
    return r


def phase_row(live: dict[int, int], verify_peak: int) -> str:
    if 3 not in live:
        return "n/a (this agent names no phases)"
    cells = []
    for p in (2, 3, 4, 5):
        cell = f"{live[p] / 1024:.1f}" if p in live else "-"
        cells.append(cell + (f" + {verify_peak / 1024:.1f}" if p == 3 else ""))
    return " / ".join(cells)


def mpy_size(source: Path, tmp: Path) -> int:
    return sum(p.stat().st_size for p in compile_agent(tmp / "mpy", source=source,
                                                       fold=FOLD[source], lines=LINES[source]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchor", action="append", help="git revision of a 'before' column "
                    f"(repeat for more; default {' and '.join(ANCHORS)})")
    ap.add_argument("--size", type=int, default=48 * 1024, help="image bytes")
    ap.add_argument("--now-only", action="store_true", help="skip the anchor column")
    ap.add_argument("--verify-only", action="store_true", help="only the Ed25519 rows and the "
                    ".mpy size (~1 min: no full updates)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="footprint-") as t:
        tmp = Path(t)
        gw = GatewayProc(tmp / "gw").start()
        try:
            bench = Bench(gw, tmp, a.size)
            rows: dict[str, dict[str, str]] = {}
            anchors = [] if a.now_only else (a.anchor or list(ANCHORS))
            revs = [(f"{rev}", rev) for rev in anchors] + [("now", "now")]
            for label, rev in revs:
                src = source_of(rev, tmp / f"src-{label}")
                v = verify_figures(src, tmp / f"v-{label}")
                ed = {
                    "Ed25519 verify, time (noisy)": f"{v['us'] / 1000:.1f} ms",
                    "Ed25519 first verify, tables written on the device (noisy)":
                        f"{v['first_us'] / 1000:.0f} ms" if "first_us" in v else "(no tables)",
                    "Ed25519 verify, instructions (callgrind)":
                        f"{v['instr'] / 1e6:.0f} M" if "instr" in v else "no valgrind",
                    "Ed25519 verify, allocated": f"{v['alloc'] / 1024:.0f} KiB ({v['alloc']:,} B)",
                    "Ed25519 verify, peak above imports": f"{v['peak'] / 1024:.1f} KiB",
                    ".mpy size (agent)": f"{mpy_size(src, tmp / f'm-{label}') / 1024:.1f} KiB",
                }
                if a.verify_only:
                    rows[label] = ed
                    continue
                strict, seen = bench.min_heap(src, 16 * 1024, 256 * 1024, strict=True)
                need, more = bench.min_heap(src, 16 * 1024, strict)
                seen.update(more)
                _, _, idle = bench.update(src, 256 * 1024)
                live = bench.phases(src)
                short = sorted(seen.items())
                rows[label] = {
                    "smallest heap, full update, no out-of-RAM (the budget's sense)":
                        f"{strict / 1024:g} KiB",
                    "smallest heap, full update, out-of-RAM retries allowed": f"{need / 1024:g} KiB",
                    "idle agent, live heap": f"{(idle or 0) / 1024:.1f} KiB",
                    "short heaps (KiB: what ran out)": "; ".join(
                        f"{h / 1024:g}: {', '.join(sorted(set(p))) or 'done'}" for h, p in short),
                    "live heap per phase, KiB (report / verify at entry + its own peak / "
                    "download / install)": phase_row(live, v["peak"]),
                    **ed,
                }
        finally:
            gw.stop()
    labels = list(rows)
    print(f"| MicroPython unix port 64-bit, {a.size} B image | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for k in rows[labels[0]]:
        print(f"| {k} | " + " | ".join(rows[lab][k] for lab in labels) + " |")


if __name__ == "__main__":
    main()
