"""``cryptolib.aes`` for CPython (the simulator, tests): ECB only, on ``cryptography``.

The device code (device/cipher.py) calls exactly ``aes(key, 1)`` then ``encrypt(in, out)`` or
``decrypt(in, out)`` on whole 16-byte blocks; this gives CPython those calls, so the simulated
fleet runs the same cipher code as a board. Injected through the agent config key ``aes``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE_ECB = 1


class aes:  # noqa: N801 - the name MicroPython gives it
    def __init__(self, key: bytes, mode: int) -> None:
        if mode != MODE_ECB:
            raise ValueError("mode")  # what cryptolib says for a mode it lacks
        self._cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())
        self._used: str | None = None

    def _run(self, kind: str, data: bytes, out: bytearray | None) -> bytes | None:
        if self._used not in (None, kind):
            raise OSError("an aes object encrypts or decrypts, not both")  # as cryptolib
        self._used = kind
        if len(data) % 16:
            raise ValueError("blksize")
        ctx = self._cipher.encryptor() if kind == "e" else self._cipher.decryptor()
        result = ctx.update(bytes(data)) + ctx.finalize()
        if out is None:
            return result
        out[:len(result)] = result
        return None

    def encrypt(self, data: bytes, out: bytearray | None = None) -> bytes | None:
        return self._run("e", data, out)

    def decrypt(self, data: bytes, out: bytearray | None = None) -> bytes | None:
        return self._run("d", data, out)
