"""OSCORE (RFC 8613) credentials for remote control centers.

``fota-gateway credentials add NAME`` makes a pair of security contexts in the data directory:
``oscore/NAME/server`` (the gateway's side) and ``oscore/NAME/client`` (the control center's
side: copy the directory to the operator's machine and run ``cc login DIR``). Both are
aiocoap ``FilesystemSecurityContext`` directories: ``secret.json`` (0600: master secret, salt,
sender and recipient ids), and ``sequence.json``, where aiocoap persists the sequence number
and replay window, so a replayed request stays refused across restarts. With credentials
required, a request without OSCORE, or protected with an unknown or wrong context, gets 4.01.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

OSCORE_DIR = "oscore"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
ID_BYTES = 6  # sender/recipient ids; the gateway's own is "g" (ids differ per client)


class CredentialError(Exception):
    pass


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_secret(folder: Path, data: dict[str, Any]) -> None:
    _private_dir(folder)
    fd = os.open(folder / "secret.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def add(data: Path, name: str) -> Path:
    """Create the paired contexts for control center ``name``; returns the client directory."""
    if not _NAME.fullmatch(name):
        raise CredentialError("name: 1-32 letters, digits, '.', '_' or '-', starting with a "
                              "letter or digit")
    base = data / OSCORE_DIR / name
    if base.exists():
        raise CredentialError(f"credentials {name!r} exist already ({base}); remove that "
                              "directory to replace them")
    secret, salt = os.urandom(32), os.urandom(8)
    client_id = os.urandom(ID_BYTES)
    gateway_id = b"g"
    _private_dir(data / OSCORE_DIR)
    common = {"secret_hex": secret.hex(), "salt_hex": salt.hex()}
    _write_secret(base / "server", {**common, "sender-id_hex": gateway_id.hex(),
                                    "recipient-id_hex": client_id.hex()})
    _write_secret(base / "client", {**common, "sender-id_hex": client_id.hex(),
                                    "recipient-id_hex": gateway_id.hex()})
    os.chmod(base, 0o700)
    return base / "client"


def names(data: Path) -> list[str]:
    root = data / OSCORE_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "server" / "secret.json").is_file())


def server_credentials(data: Path) -> Any:
    """An aiocoap CredentialsMap holding the server side of every control center's context."""
    from aiocoap.credentials import CredentialsMap

    creds = CredentialsMap()
    creds.load_from_dict({f":{n}": {"oscore": {"basedir": str(data / OSCORE_DIR / n / "server")}}
                          for n in names(data)})
    return creds


def release(creds: Any) -> None:
    """Persist sequence numbers and replay windows and release the lock files (aiocoap's
    finaliser does this too, but only when the objects are collected)."""
    for item in creds.values():
        if getattr(item, "lockfile", None) is not None and hasattr(item, "_destroy"):
            item._destroy()


def authenticated(remote: Any) -> bool:
    """True when a request came through an OSCORE context (aiocoap's OSCOREAddress)."""
    return bool(getattr(remote, "authenticated_claims", None))
