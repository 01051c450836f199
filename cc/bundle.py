"""App bundles: pack an application directory for file slots (``cc bundle``, ``cc firmware add DIR``).

Format: POSIX ustar, uncompressed. Why: the device unpacks it as a stream with one 512-byte
buffer (a header, then the file's bytes padded to 512), nothing to index or seek; every tool
reads it (``tar tvf``); Python writes it with ``tarfile``. Compression is a separate stage of
the download pipeline, so the archive does not add its own. The bundle is the image: its SHA-256
is the manifest's digest and the signature covers it.

Deterministic: the same directory gives the same bytes (sorted names, mtime 0, owner 0, modes
0644/0755, no pax or GNU extensions), so re-adding an unchanged app gives the same image id.
Only regular files and directories; symlinks, device files and names longer than ustar allows
are refused with a one-line error. ``__pycache__`` and dot-files are left out.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from cc.errors import CcError


class BundleError(CcError):
    pass


def files(src: Path) -> list[Path]:
    """The entries a bundle of ``src`` holds, relative, sorted (directories before contents)."""
    if not src.is_dir():
        raise BundleError(f"{src}: not a directory")
    out: list[Path] = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise BundleError(f"{p}: only regular files and directories go into a bundle")
        out.append(rel)
    if not any((src / r).is_file() for r in out):
        raise BundleError(f"{src}: no files to bundle")
    return out


def pack(src: Path) -> bytes:
    """The bundle of directory ``src`` (ustar bytes)."""
    src = Path(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in files(src):
            p = src / rel
            info = tarfile.TarInfo(rel.as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if p.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                data = None
            else:
                info.mode = 0o644
                raw = p.read_bytes()
                info.size = len(raw)
                data = io.BytesIO(raw)
            try:
                tar.addfile(info, data)
            except ValueError as e:  # ustar limits (name length)
                raise BundleError(f"{p}: {e}") from None
    return buf.getvalue()


def save(src: Path, home: Path) -> Path:
    """Pack ``src`` into ``home``/bundles/<sha256>.tar (kept: the image as uploaded)."""
    import hashlib

    data = pack(src)
    out = Path(home) / "bundles"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{hashlib.sha256(data).hexdigest()}.tar"
    path.write_bytes(data)
    return path
