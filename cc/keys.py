"""The Ed25519 signing key: created here, kept here (0600 in a 0700 directory), never sent.

A key file that group or others can read is refused rather than used: whoever read it can sign
firmware every device trusts, so the operator must know now, not after an audit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from proto import manifest

from .errors import CcError
from .settings import oscore_dir  # cc looks there without loading this module

KEY_FILE = "signing-key.pem"  # PKCS#8 PEM: readable by openssl and every crypto library
NEXT_FILE = "signing-key.next.pem"  # made by `cc keys next`, promoted by `cc keys rotate`


def key_path(home: Path) -> Path:
    return home / KEY_FILE


def init(home: Path, *, force: bool = False, name: str = KEY_FILE) -> Path:
    """Create a new key; refuse to replace one unless ``force`` (devices trust the old one)."""
    path = home / name
    if path.exists() and not force:
        raise CcError(f"a signing key already exists at {path}; use --force to replace it "
                      "(devices that trust the old key will refuse images signed by the new one)")
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        os.chmod(home, 0o700)  # mkdir's mode is filtered by the umask
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                     NoEncryption())
    tmp = home / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)  # atomic: a crash leaves the old key or the new one, never half
    return path


def load(home: Path, name: str = KEY_FILE) -> Ed25519PrivateKey:
    path = home / name
    try:
        st = path.stat()
    except FileNotFoundError:
        if name == NEXT_FILE:
            raise CcError(f"no next key in {home}: run `cc keys next` first") from None
        raise CcError(f"no signing key in {home}: run `cc keys init`") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CcError(f"refusing to use {path}: it is accessible by group or others "
                      f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}` "
                      "and consider the key compromised if others could read it")
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise CcError(f"cannot read signing key {path}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CcError(f"{path} is not an Ed25519 private key")
    return key


def rotate(home: Path) -> tuple[Path, Path]:
    """Promote the next key to the signing key; the old one is kept as
    ``signing-key.retired-<kid>.pem`` (devices may still trust it). Returns (retired, current)."""
    old = load(home)
    load(home, NEXT_FILE)  # exists, private, parses
    kid = manifest.key_id(manifest.public_bytes(old.public_key())).hex()
    retired = home / f"signing-key.retired-{kid}.pem"
    os.rename(key_path(home), retired)
    os.rename(home / NEXT_FILE, key_path(home))
    return retired, key_path(home)


def public_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key as 64 hex characters: what devices are configured to trust."""
    return manifest.public_bytes(key.public_key()).hex()


DEVICE_KEYS = "device-keys"


def save_device_key(home: Path, device_id: str, key_hex: str) -> Path:
    """Keep a device's report key where the signing key lives (0600 in a 0700 directory)."""
    return write_secret(home / DEVICE_KEYS, f"{device_id}.key", key_hex)


def forget_device_key(home: Path, device_id: str) -> None:
    """A decommissioned device's report key goes with it."""
    (home / DEVICE_KEYS / f"{device_id}.key").unlink(missing_ok=True)


def write_secret(folder: Path, name: str, text: str) -> Path:
    """Write ``folder/name`` (0600 in a 0700 directory) atomically: old or new, never half."""
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        os.chmod(folder, 0o700)
    path = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path


def store_oscore(home: Path, source: Path, *, force: bool = False,
                 dest: Path | None = None) -> Path:
    """Copy a client context directory (secret.json, sequence.json if any) into the home (or
    ``dest``: a profile's oscore path), 0600 files in a 0700 directory; ``secret.json`` must be
    there and parse."""
    import json
    import shutil

    secret = source / "secret.json"
    try:
        data = json.loads(secret.read_text())
    except (OSError, ValueError) as e:
        raise CcError(f"{source} holds no readable secret.json ({e})") from None
    if not isinstance(data, dict) or "secret_hex" not in data or "sender-id_hex" not in data:
        raise CcError(f"{secret} is not an OSCORE context from `fota-gateway credentials add`")
    dest = dest or oscore_dir(home)
    home = dest.parent
    if dest.exists():
        if not force:
            raise CcError(f"OSCORE credentials exist in {dest}; use --force to replace them")
        shutil.rmtree(dest)
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        os.chmod(home, 0o700)
    dest.mkdir(mode=0o700)
    os.chmod(dest, 0o700)
    for name in ("secret.json", "sequence.json"):
        if (source / name).is_file():
            fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, (source / name).read_bytes())
                os.fsync(fd)
            finally:
                os.close(fd)
    return dest
