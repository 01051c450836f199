"""Wrapped content keys of encrypted images: stored, counted, handed to each device.

The control center wraps an image's content-encryption key (AES Key Wrap, RFC 3394) for each
recipient under a key the gateway never holds: a device's firmware key, or a class key
(recipient ``"*"``: every device of the image's class). The gateway cannot unwrap them; it
only keeps them and puts the right one into the device's UPDATE command (``CmdKey.CEK``). A
device whose own key does not unwrap what it gets refuses before downloading (result 24).
Re-wrapping for a device whose firmware key rotated replaces its row; the image stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .store import Store

CLASS_RECIPIENT = "*"
WRAPPED_BYTES = 40  # A256KW of a 32-byte key
MAX_RECIPIENT = 64


class BadKeys(ValueError):
    pass


def put(store: Store, image_id: str, body: Any) -> int:
    """Store ``{recipient: wrapped}`` for an encrypted image (replacing older ones); returns how
    many recipients the image now has. Raises ``BadKeys`` or ``LookupError`` (unknown image)."""
    if not isinstance(body, Mapping) or not body:
        raise BadKeys("body must be a non-empty map of recipient -> wrapped key")
    for rcpt, wrapped in body.items():
        if not isinstance(rcpt, str) or not 0 < len(rcpt) <= MAX_RECIPIENT:
            raise BadKeys(f"recipient must be a device id or {CLASS_RECIPIENT!r}")
        if not isinstance(wrapped, bytes) or len(wrapped) != WRAPPED_BYTES:
            raise BadKeys(f"wrapped key of {rcpt!r} must be {WRAPPED_BYTES} bytes (A256KW)")
    with store.transaction():
        if store.image(image_id) is None:
            raise LookupError(image_id)
        store.put_wrapped_keys(image_id, dict(body))
        store.event("keys", f"image {image_id}: content key wrapped for {len(body)} "
                    f"recipient(s): {', '.join(sorted(body)[:5])}{' …' if len(body) > 5 else ''}")
    return store.count_wrapped_keys(image_id)


def count(store: Store, image_id: str) -> int:
    return store.count_wrapped_keys(image_id)


def for_device(store: Store, image_id: str, device_id: str) -> bytes | None:
    """The device's own wrapped key, else the class-key one, else None."""
    return store.wrapped_key(image_id, device_id, CLASS_RECIPIENT)
