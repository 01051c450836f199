"""Adding an image: hash it, upload it, sign its manifest, register it with the gateway.

The manifest is built and signed here, after the upload, from the bytes hashed here: the gateway
never sees the key and cannot make a device accept bytes other than the ones hashed on this side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import manifest, packing, uris
from proto.codes import Compression
from proto.control import MAX_IMAGE, MAX_LABEL, MAX_NOTES

from .client import ControlClient, segment
from .encryption import Encrypted, encrypt_bytes, iv_after
from .errors import CcError
from .upload import upload

HASH_CHUNK = 1 << 16


def digest_file(file: Path) -> tuple[bytes, int]:
    """SHA-256 and size of ``file``, read in chunks (images can be megabytes)."""
    try:
        if not file.is_file():
            raise CcError(f"no such file: {file}")
        h = hashlib.sha256()
        size = 0
        with open(file, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise CcError(f"cannot read {file}: {e.strerror}") from None
    if size == 0:
        raise CcError(f"{file} is empty: nothing to install")
    if size > MAX_IMAGE:
        raise CcError(f"{file} is {size} bytes; the gateway takes images of at most "
                      f"{MAX_IMAGE} bytes")
    return h.digest(), size


def signed_manifest(key: Ed25519PrivateKey, *, seq: int, vendor: str, device_class: str,
                    digest: bytes, size: int,
                    encryption: tuple[bytes, bytes] | None = None) -> bytes:
    """``encryption``: (IV, SHA-256 of the ciphertext) of an encrypted image."""
    sent = encryption[1] if encryption else digest  # the URI names the bytes it serves
    try:
        return manifest.sign(
            manifest.build(seq=seq, vendor=vendor, device_class=device_class, digest=digest,
                           size=size, uri=uris.image_path(sent),
                           encryption=encryption),
            key)
    except manifest.ManifestError as e:
        raise CcError(f"cannot build the manifest: {e}") from None


def describe(label: str | None, notes: Path | None) -> dict[str, Any]:
    """The optional "label" and "notes" fields of ``POST fw`` (notes read from a file)."""
    out: dict[str, Any] = {}
    if label is not None:
        if not label.strip() or not label.isprintable() or len(label) > MAX_LABEL:
            raise CcError(f"--label must be printable text of 1-{MAX_LABEL} characters")
        out["label"] = label
    if notes is not None:
        try:
            text = notes.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CcError(f"cannot read the release notes {notes}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
        if len(text) > MAX_NOTES:
            raise CcError(f"{notes} has {len(text)} characters; release notes are limited to "
                          f"{MAX_NOTES}")
        out["notes"] = text
    return out


async def class_devices(client: ControlClient, device_class: str) -> list[dict[str, Any]]:
    """Every device of ``device_class`` (GET dev answers one page at a time)."""
    out: list[dict[str, Any]] = []
    for _ in range(10_000):  # bounded: 10 million devices
        page = await client.get(f"{uris.DEV}?class={segment(device_class)}&offset={len(out)}")
        if not page:
            return out
        out += page
    raise CcError("too many devices to list")


async def resign(client: ControlClient, key: Ed25519PrivateKey, image_id: str,
                 seq: int | None) -> dict[str, Any]:
    """Fleet rollback: register the gateway's image ``image_id`` again under a manifest with a
    higher sequence number (the bytes are already there: their digest is what is signed).
    Without ``seq``: one above every image of its class and every device of its class."""
    images = await client.get(uris.FW)
    old = next((i for i in images if i.get("id") == image_id), None)
    if old is None:
        raise CcError(f"the gateway has no image {image_id!r} (see `cc firmware list`)")
    if seq is None:
        devices = await class_devices(client, old["class"])
        seq = 1 + max([int(i["seq"]) for i in images if i.get("class") == old["class"]]
                      + [int(d.get("seq") or 0) for d in devices])
    encryption, digest = None, bytes.fromhex(old["digest"])
    if old.get("encrypted"):  # same ciphertext, IV and wrapped keys; the digest signed is the
        # installed image's, the blob's is the ciphertext's
        encryption = (bytes.fromhex(old["iv"]), digest)
        digest = bytes.fromhex(old["installed_digest"])
    signed = signed_manifest(key, seq=seq, vendor=old["vendor"], device_class=old["class"],
                             digest=digest, size=int(old["size"]), encryption=encryption)
    image = await client.post(uris.FW, {"manifest": signed, "class": old["class"],
                                        "vendor": old["vendor"], "supersede": True})
    if not isinstance(image, dict):
        raise CcError(f"gateway sent an unexpected answer to {uris.FW}: {image!r}")
    return {**image, "was": old["seq"]}


async def add(client: ControlClient, key: Ed25519PrivateKey, file: Path, *, seq: int,
              device_class: str, vendor: str, digest: bytes, size: int,
              progress: Callable[[int], None] = lambda done: None,
              encrypted: Encrypted | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload the blob (the ciphertext if ``encrypted``), then POST the signed manifest (with
    ``extra`` fields: label, notes, supersede); returns the gateway's IMAGE map."""
    signed = signed_manifest(key, seq=seq, vendor=vendor, device_class=device_class,
                             digest=digest, size=size,
                             encryption=(encrypted.iv, encrypted.sent) if encrypted else None)
    blob, sent = (encrypted.path, encrypted.sent) if encrypted else (file, digest)
    stored = await upload(client, blob, sent.hex(), size, progress)
    if stored.get("digest") != sent.hex() or stored.get("size") != size:
        raise CcError(f"gateway stored {stored.get('size')} bytes with digest "
                      f"{stored.get('digest')}, not the {size} bytes hashed here")
    image = await client.post(uris.FW, {"manifest": signed, "class": device_class,
                                        "vendor": vendor, **(extra or {})})
    if not isinstance(image, dict):
        raise CcError(f"gateway sent an unexpected answer to {uris.FW}: {image!r}")
    return image


# -- compression and deltas (issue 12) -------------------------------------------------------
#: a compressed variant is registered only when it saves at least this share of the bytes
COMPRESS_PAYS = 0.9


def variant_manifest(key: Ed25519PrivateKey, image: dict[str, Any], *, vendor: str,
                     device_class: str, digest: bytes, size: int, sent: bytes, sent_size: int,
                     base: bytes | None = None, iv: bytes | None = None) -> bytes:
    """Sign a variant: the image digest and size hashed here, plus what is sent instead
    (``iv``: it is encrypted, A256CTR under the image's CEK, after compression)."""
    try:
        return manifest.sign(manifest.build(
            seq=int(image["seq"]), vendor=vendor, device_class=device_class, digest=digest,
            size=size, uri=uris.image_path(sent), compression=int(Compression.DEFLATE),
            delta_base=base, sent_digest=sent, sent_size=sent_size,
            encryption=(iv, sent) if iv is not None else None), key)
    except manifest.ManifestError as e:
        raise CcError(f"cannot build the manifest: {e}") from None


async def add_compressed(client: ControlClient, key: Ed25519PrivateKey, file: Path,
                         image: dict[str, Any], *, vendor: str, device_class: str, digest: bytes,
                         size: int, tmp: Path,
                         encrypted: Encrypted | None = None) -> dict[str, Any] | None:
    """Deflate the image (proto/packing.py), and where that pays upload it and sign it.
    ``encrypted``: the deflated bytes are encrypted under the image's CEK (an IV of their own,
    encryption.iv_after) before they leave, so the device decrypts, then decompresses."""
    packed = packing.compress_image(file.read_bytes())
    if len(packed) >= COMPRESS_PAYS * size:
        return None
    iv = None
    if encrypted is not None:
        iv = iv_after(encrypted.iv, size)
        packed = encrypt_bytes(encrypted.cek, iv, packed)
    sent = hashlib.sha256(packed).digest()
    tmp.write_bytes(packed)
    await upload(client, tmp, sent.hex(), len(packed))
    signed = variant_manifest(key, image, vendor=vendor, device_class=device_class,
                              digest=digest, size=size, sent=sent, sent_size=len(packed), iv=iv)
    return await client.post(f"{uris.FW}/{image['id']}/variants", {"manifest": signed})


async def add_deltas(client: ControlClient, key: Ed25519PrivateKey, image: dict[str, Any], *,
                     vendor: str, device_class: str, digest: bytes,
                     size: int) -> list[dict[str, Any]]:
    """Have the gateway build deltas from earlier images of the class, and sign each.

    The gateway made the delta bytes, so their digest is its word; what a device installs is
    still checked against the image digest hashed here, which a bad delta cannot match."""
    built = await client.post(f"{uris.FW}/{image['id']}/deltas", {})
    if not isinstance(built, list):
        raise CcError(f"gateway sent an unexpected answer to deltas: {built!r}")
    out = []
    for v in built:
        if v.get("kind") != "delta" or v.get("signed"):
            continue
        signed = variant_manifest(key, image, vendor=vendor, device_class=device_class,
                                  digest=digest, size=size, sent=bytes.fromhex(v["sent"]),
                                  sent_size=int(v["sent_size"]), base=bytes.fromhex(v["base"]))
        out.append(await client.post(f"{uris.FW}/{image['id']}/variants", {"manifest": signed}))
    return out
