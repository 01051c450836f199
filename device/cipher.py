"""Firmware decryption: AES-CTR built on the AES-ECB MicroPython has.

MicroPython's ``cryptolib.aes`` has ECB and CBC; CTR is compiled out of most builds, and no
port has an AEAD. So the content cipher is AES-256-CTR (RFC 9459 "A256CTR", as in the SUIT
firmware-encryption draft) built here on ECB, and integrity comes from the signed manifest
instead of an AEAD tag: it signs the SHA-256 of the image as installed (checked by the device
after the last block, before anything boots) and of the ciphertext as sent (the blob's identity
on the gateway). CTR is malleable, so a flipped ciphertext bit flips the plaintext and fails the
installed digest: tampering ends as an integrity failure with the running image untouched.

CTR is the mode because its keystream at any byte depends only on (key, IV, offset): a download
resumed after a power cut at any block needs nothing but the offset it persisted, and no state
beyond a few small buffers lives in RAM. The counter block of AES block ``j`` is ``(IV + j) mod
2**128`` (big-endian, the whole block counts, as RFC 9459 and ``cryptography``'s CTR do).

The content-encryption key (CEK) reaches the device wrapped with AES Key Wrap (RFC 3394,
"A256KW" recipient): device/keywrap.py, a module of its own so that its code is gone from the
heap while this one decrypts.

Heap: the code is what costs (about 1 KiB loaded from .mpy, nothing when frozen); a running
``ctr`` keeps its AES object and 128 bytes of keystream and counters, and each 64-byte step
leaves a few small integers behind for the next GC (measured: bench/encryption.py).

``aes`` is the ``cryptolib.aes`` constructor (``aes(key, 1)``: ECB, one object encrypts or
decrypts, never both); hosts without ``cryptolib`` (CPython, the simulator) inject one with the
same calls (``sim/hostaes.py``).
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Underscored const() names are folded into the code by MicroPython's compiler: no globals,
# no interned names (about 800 bytes less heap than plain module constants).
_ECB = const(1)
_CHUNK = const(64)  # bytes of keystream per ECB call: bounds the transient heap of one XOR
_BLOCKS = const(4)  # _CHUNK // 16
_M128 = const(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF)


def ctr(aes, key, iv):
    """AES-CTR at any offset: returns ``apply(offset, data, out)``, which writes the result
    into ``out`` (a writable buffer at least ``len(data)`` long: the download's block buffer,
    so there is no block-sized buffer here) and returns a memoryview of it. A closure, not a
    class: less heap for the code."""
    if len(key) != 32 or len(iv) != 16:
        raise ValueError("CTR needs a 32-byte key and a 16-byte IV")
    a = aes(bytes(key), _ECB)  # kept as is: a bound method or an int of the IV costs heap
    iv = bytes(iv)
    ks = bytearray(_CHUNK)
    cb = bytearray(_CHUNK)  # the next _BLOCKS counter blocks

    def apply(offset, data, out):
        n = len(data)
        j = (int.from_bytes(iv, "big") + (offset >> 4)) & _M128
        for k in range(_BLOCKS):
            cb[16 * k:16 * k + 16] = ((j + k) & _M128).to_bytes(16, "big")
        skip = offset & 15  # Block2 offsets are multiples of 16; any offset works
        done = 0
        while done < n:
            a.encrypt(cb, ks)
            for e in range(15, _CHUNK, 16):  # every counter += _BLOCKS, in place, mod 2**128
                c = _BLOCKS
                i = e
                while c and i > e - 16:
                    c += cb[i]
                    cb[i] = c & 255
                    c >>= 8
                    i -= 1
            take = min(_CHUNK - skip, n - done)
            x = int.from_bytes(ks[skip:skip + take] if take < _CHUNK else ks, "big") ^ \
                int.from_bytes(data[done:done + take], "big")
            out[done:done + take] = x.to_bytes(take, "big")
            done += take
            skip = 0
        return memoryview(out)[:n]

    return apply
