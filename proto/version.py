"""The installed package's version, for every command's ``--version`` (one place for it)."""

from __future__ import annotations


def version_line(prog: str) -> str:
    """'cc 0.1.0' (from the installed distribution's metadata)."""
    import importlib.metadata

    try:
        return f"{prog} {importlib.metadata.version('fota-micropython')}"
    except importlib.metadata.PackageNotFoundError:
        return f"{prog} (version unknown: not installed)"
