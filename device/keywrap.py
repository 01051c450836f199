"""AES Key Wrap unwrap (RFC 3394) on cryptolib's ECB: the content key of an encrypted image.

The control center wraps each image's content-encryption key (CEK) for each recipient
("A256KW", SUIT firmware-encryption vocabulary) under a key-encryption key only it and the
device hold (the device's ``fw_key``, or a ``class_key``). ``unwrap`` checks RFC 3394's
integrity value, so a key wrapped for another device is refused (ValueError) before anything
is downloaded. Its own module: the agent drops it once the key is out (device/cipher.py
decrypts; device/agent.py imports each only while it needs it). ``content_key`` tries the
keys a device config holds.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from .const import RES_KEY_UNAVAILABLE, RES_UNSUPPORTED_IMAGE

_ECB = const(1)
_KW_IV = const(0xA6A6A6A6A6A6A6A6)  # RFC 3394 section 2.2.3.1 default initial value


def unwrap(aes, kek, wrapped):
    """RFC 3394 key unwrap (index-based form, section 2.2.2) of ``wrapped`` under ``kek``;
    ValueError if the lengths are wrong or it does not unwrap under ``kek`` (another KEK)."""
    if len(kek) not in (16, 24, 32) or len(wrapped) % 8 or not 24 <= len(wrapped) <= 520:
        raise ValueError("bad key or wrapped-key length")
    n = len(wrapped) // 8 - 1
    d = aes(bytes(kek), _ECB).decrypt
    a = int.from_bytes(wrapped[:8], "big")
    r = bytearray(wrapped[8:])
    b = bytearray(16)
    for j in range(5, -1, -1):
        for i in range(n, 0, -1):
            o = 8 * (i - 1)
            b[:8] = (a ^ (n * j + i)).to_bytes(8, "big")
            b[8:] = r[o:o + 8]
            d(b, b)
            a = int.from_bytes(b[:8], "big")
            r[o:o + 8] = b[8:]
    if a != _KW_IV:
        raise ValueError("wrapped key does not unwrap under this key")
    return bytes(r)


def content_key(cfg, wrapped):
    """(aes, content key) unwrapped with the config's firmware key (or its class key), or the
    result to report: unsupported image (no AES on this port) or key unavailable."""
    aes = cfg.get("aes")
    if aes is None:
        try:
            from cryptolib import aes
        except ImportError:
            return RES_UNSUPPORTED_IMAGE
    if isinstance(wrapped, bytes):
        for name in ("fw_key", "class_key"):
            kek = cfg.get(name)
            if kek:
                try:
                    return aes, unwrap(aes, bytes.fromhex(kek) if isinstance(kek, str) else kek,
                                       wrapped)
                except ValueError:  # wrapped under another key
                    pass
    return RES_KEY_UNAVAILABLE
