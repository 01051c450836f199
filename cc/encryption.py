"""Encrypted images: the content key, its wrapping for each recipient, the keys cc keeps.

SUIT firmware-encryption vocabulary (draft-ietf-suit-firmware-encryption): each image gets a
fresh content-encryption key (CEK) and is encrypted with AES-256-CTR (RFC 9459, "A256CTR":
MicroPython's cryptolib has ECB, on which the device builds CTR; no port has an AEAD). The
signed manifest carries the IV, the SHA-256 of the ciphertext as sent and of the image as
installed, which is the integrity an AEAD tag would give. The CEK goes to each recipient
wrapped with AES Key Wrap (RFC 3394, "A256KW") under a key-encryption key the gateway never
holds: a device's own firmware key, or a class key shared by a device class.

Files under FOTA_HOME, each 0600 in a 0700 directory, never sent anywhere:
  device-keys/<id>.fw        a device's firmware key (64 hex): fota.json "fw_key"
  class-keys/<class>.fw      a class key (64 hex): fota.json "class_key" of that class
  content-keys/<image>.key   the CEK of an encrypted image: re-wrapping for a device whose key
                             rotated (or a new device) needs it, re-encrypting does not happen
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from .errors import CcError
from .keys import DEVICE_KEYS, write_secret

CLASS_KEYS = "class-keys"
CONTENT_KEYS = "content-keys"
FW_SUFFIX = ".fw"
CLASS_RECIPIENT = "*"  # gateway/wrapped.py: every device of the image's class
KEY_BYTES = 32
CHUNK = 1 << 16


def _read_key(path: Path) -> bytes | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CcError(f"refusing to use {path}: it is accessible by group or others "
                      f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise CcError(f"cannot read key {path}: {e}") from None
    if len(key) != KEY_BYTES:
        raise CcError(f"{path} must hold {2 * KEY_BYTES} hex characters")
    return key


def _key(folder: Path, name: str, *, create: bool, rotate: bool) -> tuple[bytes | None, bool]:
    """(key or None, made now). ``create`` makes one if absent; ``rotate`` always a new one."""
    key = None if rotate else _read_key(folder / name)
    if key is not None or not (create or rotate):
        return key, False
    key = os.urandom(KEY_BYTES)
    write_secret(folder, name, key.hex())
    return key, True


def firmware_key(home: Path, device_id: str, *, create: bool = False,
                 rotate: bool = False) -> tuple[bytes | None, bool]:
    return _key(home / DEVICE_KEYS, device_id + FW_SUFFIX, create=create, rotate=rotate)


def class_key(home: Path, device_class: str, *, create: bool = False,
              rotate: bool = False) -> tuple[bytes | None, bool]:
    return _key(home / CLASS_KEYS, device_class + FW_SUFFIX, create=create, rotate=rotate)


def firmware_key_path(home: Path, device_id: str) -> Path:
    return home / DEVICE_KEYS / (device_id + FW_SUFFIX)


@dataclass(frozen=True)
class Encrypted:
    path: Path  # the ciphertext, to upload (delete it after)
    iv: bytes
    sent: bytes  # SHA-256 of the ciphertext
    cek: bytes


def encrypt_file(src: Path, dst: Path) -> Encrypted:
    """Encrypt ``src`` under a fresh CEK and IV into ``dst`` (same size), streaming."""
    cek, iv = os.urandom(KEY_BYTES), os.urandom(16)
    enc = Cipher(algorithms.AES(cek), modes.CTR(iv)).encryptor()
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(CHUNK):
                out = enc.update(chunk)
                h.update(out)
                fout.write(out)
    except OSError as e:
        raise CcError(f"cannot encrypt {src} into {dst}: {e.strerror}") from None
    return Encrypted(dst, iv, h.digest(), cek)


def iv_after(iv: bytes, size: int) -> bytes:
    """The IV of a second ciphertext under the same CEK (the compressed copy of an image of
    ``size`` bytes): its counter blocks start right after the full ciphertext's last one, so
    the two keystreams never overlap (CTR must never reuse a counter block under one key)."""
    n = (int.from_bytes(iv, "big") + (size + 15) // 16) % (1 << 128)
    return n.to_bytes(16, "big")


def encrypt_bytes(cek: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(cek), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def save_cek(home: Path, image_id: str, cek: bytes) -> Path:
    return write_secret(home / CONTENT_KEYS, image_id + ".key", cek.hex())


def load_cek(home: Path, image_id: str) -> bytes:
    cek = _read_key(home / CONTENT_KEYS / (image_id + ".key"))
    if cek is None:
        raise CcError(f"no content key for image {image_id} in {home / CONTENT_KEYS}: it was "
                      "not encrypted here (only the cc that encrypted it can wrap its key)")
    return cek


def wrap(home: Path, cek: bytes, device_ids: list[str],
         class_name: str | None = None) -> tuple[dict[str, bytes], list[str]]:
    """({recipient: wrapped CEK}, devices without a firmware key). With ``class_name`` the CEK
    is also wrapped once under that class key (made if absent) for recipient "*"."""
    out: dict[str, bytes] = {}
    missing = []
    for dev in device_ids:
        kek, _ = firmware_key(home, dev)
        if kek is None:
            missing.append(dev)
        else:
            out[dev] = aes_key_wrap(kek, cek)
    if class_name is not None:
        kek, _ = class_key(home, class_name, create=True)
        assert kek is not None
        out[CLASS_RECIPIENT] = aes_key_wrap(kek, cek)
    return out, missing
