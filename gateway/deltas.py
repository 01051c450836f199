"""Deltas: built once per (base, target) pair, stored as blobs, chosen per device at offer time.

A delta is made with detools (sequential patch, bsdiff algorithm, no compression), re-encoded
as the op stream of device/patch.py (runs of unchanged bytes become COPY ops instead of zeros)
and packed in deflate segments (proto/packing.py). On mpy-cross 1.22.1 -> 1.22.2 (318 KiB) that
is ~1.2x bsdiff4's bzip2 patch and ~2 % of the image (docs/performance.md, bench/delta.py).

The signing key stays with cc: the gateway builds and stores the delta, cc signs a manifest for
it (the image digest and size it hashed itself, DELTA_BASE, the delta's digest and size) and
registers it as a variant of the image. What a device is offered is ``choose``'s pick among the
variants it can decode; a device whose delta failed is offered full images from that base on.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from proto import manifest as mf
from proto import packing, uris
from proto.codes import Cap, Compression, Result, result_name
from proto.keys import ManifestKey

from .blobs import BlobStore
from .store import Row, Store

#: a delta is offered only when it is smaller than this share of the full transfer (the best
#: full variant the device can take): below that the saving pays for the patching time
MAX_SHARE = 0.5
#: how many of the newest earlier images of a class get a delta to a new image
MAX_BASES = 4


class DeltaError(ValueError):
    pass


def _size(f: io.BytesIO) -> int:
    """detools' size field: first byte 6 bits and a sign, then 7 bits per byte."""
    b = f.read(1)
    if not b:
        raise DeltaError("truncated detools patch")
    byte = b[0]
    neg = byte & 0x40
    value = byte & 0x3F
    shift = 6
    while byte & 0x80:
        b = f.read(1)
        if not b:
            raise DeltaError("truncated detools patch")
        byte = b[0]
        value |= (byte & 0x7F) << shift
        shift += 7
    return -value if neg else value


def detools_ops(base: bytes, target: bytes) -> Iterator[tuple[int, Any]]:
    """The ops of a detools sequential patch from ``base`` to ``target``."""
    import detools

    buf = io.BytesIO()
    detools.create_patch(io.BytesIO(base), io.BytesIO(target), buf, compression="none",
                         patch_type="sequential", algorithm="bsdiff")
    f = io.BytesIO(buf.getvalue())
    header = f.read(1)
    if not header or header[0] != 0x00:  # sequential, compression none
        raise DeltaError("unexpected detools patch header")
    to_size = _size(f)
    if to_size != len(target):
        raise DeltaError("detools patch makes the wrong size")
    if to_size and _size(f) != 0:  # data-format section: not used for plain binaries
        raise DeltaError("detools data format sections are not supported")
    pos = 0
    while pos < to_size:
        n = _size(f)
        yield from packing.split_diff(f.read(n))
        pos += n
        n = _size(f)
        if n:
            yield packing.INSERT, f.read(n)
        pos += n
        adjust = _size(f)
        if adjust:
            yield packing.SEEK, adjust


def build(base: bytes, target: bytes) -> bytes:
    """The bytes sent for a delta: op stream in deflate segments (Compression.DEFLATE)."""
    pieces = list(packing.encode_ops(len(target), detools_ops(base, target)))
    sent = packing.deflate_segments(pieces, packing.SEGMENT_OUT_DELTA)
    packing.check_streamable(sent, sum(len(p) for p, _ in pieces))
    return sent


def worth_it(delta_size: int, full_size: int) -> bool:
    return delta_size < MAX_SHARE * full_size


def choose(variants: Sequence[Mapping[str, Any]], caps: int, running: str | None,
           no_delta: str | None) -> Mapping[str, Any] | None:
    """The variant to offer: the smallest one the device can decode; None: the plain image.

    A variant has ``base`` (hex digest, '' for a full image), ``compression`` and
    ``sent_size``. A delta needs the device's running image to be its base, and that base not
    to have failed before for this device (``no_delta``)."""
    best = None
    for v in variants:
        if v["compression"] == Compression.DEFLATE and not caps & Cap.DEFLATE:
            continue
        if v["base"]:
            if not caps & Cap.DELTA or v["base"] != running or v["base"] == no_delta:
                continue
        if best is None or v["sent_size"] < best["sent_size"]:
            best = v
    return best


# -- the gateway's records (called by fleet.py and control_api.py on the event loop thread) --

def plain(image: Row) -> bool:
    """Not encrypted: its blob is the image itself (a delta from or to ciphertext is useless;
    an encrypted image's deflated copy is made and encrypted by cc, under the image's CEK)."""
    return not mf.encrypted(mf.parse(bytes(image["manifest"])))


def kind(variant: str | None) -> str | None:
    """What a job sent: 'full' (the plain image), 'deflate' or 'delta'; None before an offer."""
    return variant.split("/")[0] if variant else None


def pick(store: Store, dev: Row, image: Row) -> Row | None:
    """The variant row to offer ``dev`` for ``image`` (None: the plain image)."""
    # signed for the image's current seq: `cc rollback` re-signs an image at a higher one
    rows = [r for r in store.variants_of(image["id"], signed_only=True)
            if mf.parse(bytes(r["manifest"]))[ManifestKey.SEQ] == image["seq"]]
    if not rows:
        return None
    caps = dev["caps"]
    full = choose([r for r in rows if not r["base"]], caps, None, None)
    full_size = full["sent_size"] if full is not None else image["size"]
    delta = choose([r for r in rows if r["base"]], caps,
                   store.image_digest_at(dev["class"], dev["seq"]), dev["no_delta"])
    if delta is not None and worth_it(delta["sent_size"], full_size):
        return delta
    return full


def offer(store: Store, job: Row, image: Row, record: bool = True) -> bytes:
    """The signed manifest to hand ``job``'s device; records what it was (``record``)."""
    dev = store.device(job["device"])
    v = pick(store, dev, image) if dev is not None else None
    if record:
        variant = "full" if v is None else f"{'delta' if v['base'] else 'deflate'}/{v['id']}"
        store.set_job_variant(job["id"], variant, image["size"] if v is None else v["sent_size"])
    return image["manifest"] if v is None else bytes(v["manifest"])


def failed(store: Store, job: Row, result: int) -> bool:
    """A delta job failed on its device: True when the full image should be offered instead.

    Integrity failure (the base slot did not hold the base) or "unsupported" (the device
    does not run that base, or cannot apply it): the device gets no delta from that base
    again, and the job goes back to the queue to be offered the full image."""
    if kind(job["variant"]) != "delta" or result not in (Result.INTEGRITY_FAILURE,
                                                        Result.UNSUPPORTED_IMAGE):
        return False
    row = store.variant(job["variant"].split("/")[1])
    if row is None:
        return False
    store.set_no_delta(job["device"], row["base"])
    store.event("delta", f"job {job['id']}: the delta from {row['base'][:8]} failed "
                f"({result_name(result)}); the full image next", device=job["device"],
                campaign=job["campaign"])
    return True


def blob_of(store: Store, uri_id: str) -> str | None:
    """Digest (hex) of the blob served under ``f/<uri_id>``: an image or a signed variant."""
    row = store.image(uri_id)
    if row is not None:
        return row["digest"]
    return store.variant_sent(uri_id)


def variant_id(image_id: str, base: str) -> str:
    """One variant per (image, base): several may send the same blob (a delta v1 -> v2 can
    equal v2 -> v3 byte for byte), so the id is not the blob's."""
    return f"{image_id}.{base[:16] or 'full'}"


def view(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "uri": row["uri"], "image": row["image"],
            "kind": "delta" if row["base"] else "deflate",
            "base": row["base"] or None, "compression": row["compression"],
            "sent": row["sent"], "sent_size": row["sent_size"],
            "signed": row["manifest"] is not None, "created": row["created"]}


def variants(store: Store, image_id: str | None = None) -> list[dict[str, Any]]:
    return [view(r) for r in store.variants_of(image_id)]


def store_blob(blobs: BlobStore, data: bytes) -> str:
    """Write ``data`` as a content-addressed blob (atomic, fsynced); returns its digest hex.
    Runs in a worker thread: files only, no database (the caller shares it afterwards)."""
    digest = hashlib.sha256(data).hexdigest()
    if not blobs.path(digest).is_file():
        blobs.write_bytes(digest, data, share=False)
    return digest


def build_blobs(blobs: BlobStore, pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """For each (base digest, target digest): build the delta and store it. Worker thread."""
    out = []
    for base, target in pairs:
        data = build(blobs.path(base).read_bytes(), blobs.path(target).read_bytes())
        out.append((base, store_blob(blobs, data), len(data)))
    return out


def record_built(store: Store, image: Row, built: list[tuple[str, str, int]]) -> None:
    now = time.time()
    with store.transaction():
        for base, sent, size in built:
            store.add_variant(variant_id(image["id"], base), uris.image_id(bytes.fromhex(sent)),
                              image["id"], base, int(Compression.DEFLATE), sent, size, None, now)
            store.event("delta", f"delta {base[:8]} -> {image['id']} built: {size} bytes "
                        f"({100 * size / image['size']:.1f} % of the image)")


def register(store: Store, blobs: BlobStore, image_id: str, signed: Any) -> dict[str, Any]:
    """Take cc's signed manifest for a variant of ``image_id`` (a compressed image whose blob
    cc uploaded, or a delta built here); every field must match what is stored."""
    from .fleet import Refused

    image = store.image(image_id)
    if image is None:
        raise Refused("not_found", "no such image")
    if not isinstance(signed, bytes):
        raise Refused("bad_request", "manifest must be a byte string (COSE_Sign1)")
    try:
        m = mf.parse(signed)
    except mf.ManifestError as e:
        raise Refused("bad_request", f"bad manifest: {e}") from None
    if mf.is_full(m) or mf.encrypted(m) == plain(image):
        raise Refused("bad_request", "a variant is a compressed copy or a delta of the image, "
                      "encrypted exactly when the image is")
    if mf.encrypted(m) and ManifestKey.DELTA_BASE in m:
        raise Refused("bad_request", "an encrypted image gets no deltas: the gateway cannot "
                      "diff ciphertext")
    installed = mf.parse(bytes(image["manifest"]))[ManifestKey.DIGEST]  # not the ciphertext's
    same = (m[ManifestKey.DIGEST] == installed and m[ManifestKey.SIZE] == image["size"]
            and m[ManifestKey.SEQ] == image["seq"]
            and m[ManifestKey.CLASS] == mf.class_id(image["vendor"], image["class"])
            and m[ManifestKey.VENDOR] == mf.vendor_id(image["vendor"]))
    if not same:
        raise Refused("bad_request", "the variant's digest, size, seq, vendor and class must be "
                      "the image's")
    sent: bytes = m[ManifestKey.SENT_DIGEST]
    if m[ManifestKey.URI] != uris.image_path(sent):
        raise Refused("bad_request", f"variant uri must be {uris.image_path(sent)}")
    if blobs.size(sent.hex()) != m[ManifestKey.SENT_SIZE]:
        raise Refused("bad_request", "no blob of the sent digest and size: upload it first")
    base = m.get(ManifestKey.DELTA_BASE)
    base_hex = base.hex() if base is not None else ""
    comp = int(m.get(ManifestKey.COMPRESSION, Compression.NONE))
    if base is not None and not store.has_image_digest(base_hex, image["class"]):
        raise Refused("bad_request", "the delta base is no image of this class")
    vid = variant_id(image_id, base_hex)
    with store.transaction():
        row = store.variant_like(image_id, base_hex, comp)
        if row is not None and row["sent"] != sent.hex():
            raise Refused("conflict", "this image already has that variant with other bytes")
        if row is None:
            store.add_variant(vid, uris.image_id(sent), image_id, base_hex, comp, sent.hex(),
                              m[ManifestKey.SENT_SIZE], signed, time.time())
        else:
            store.sign_variant(row["id"], signed)
        what = f"delta from {base_hex[:8]}" if base is not None else "deflate"
        store.event("image", f"image {image_id}: {what} variant signed, "
                    f"{m[ManifestKey.SENT_SIZE]} bytes sent")
    return view(store.variant(row["id"] if row is not None else vid))
