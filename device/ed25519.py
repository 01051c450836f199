"""Ed25519 signature verification (RFC 8032 section 5.1.7), pure Python for MicroPython.

Checks [S]B - [k]A == R with no doubling: both bases are fixed (B, and each trusted key A), so
each has a table on flash of [j * 32^i]P (j = 1..16, i = 0..50; 78,404 bytes) and a scalar is
51 signed digits in -16..16, one table entry each: ~98 mixed additions, one inversion (an
addition chain of ``pow`` calls), then R' is encoded and compared with R (a non-canonical R never matches). Rejects
S >= L and keys that do not decode. Verification only: no secret data, so no constant time.

Heap: every big-int operation allocates its result, so the additions are few and lean: an entry
is ((y + x)/2, (y - x)/2, dxy), which makes the formula's 2Z plain Z, and X, Y, T stay
unreduced products (the next addition reduces them). Measured on the 64-bit unix port
(bench/footprint.py, anchor in the same run): 218 KiB allocated per verify (623 before), 22 M
instructions (80 M). With 16^i tables (48 KiB) it stays above 256 KB: ~120 additions.

Tables: file ``<tables>/<first 8 bytes of the key, hex>``: magic, the key, the entries, then
SHA-256 of all that. Provisioning writes them (``write_table`` on the host); one that is missing
or made for another key is written here, once (~0.2 s each on the unix port). A table cannot make a
wrong signature verify; a damaged entry makes a right one fail: when a signature fails, both
tables' digests are checked, and a damaged table is rewritten and the signature tried again.
A table that cannot be written raises OSError (the agent reports no space, not a bad signature).
"""

import binascii
import hashlib
import os

from . import drop

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
I = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # sqrt(-1)
W = 5  # bits per digit
N = 51  # digits: 51 * 5 >= 253
H = 16  # entries per digit position: 2 ** (W - 1)
MAGIC = b"Ed\x05\x33"  # the layout above (W, N); another layout is rebuilt, never misread
BASE = b"\x58" + b"\x66" * 31  # B, encoded
DIR = "ed25519"  # the tables' directory, next to the agent's state file


def tables(state):
    """The tables' directory for the state file ``state`` (a path)."""
    return state[:state.rfind("/") + 1] + DIR


def _add(a, u, v, w, neg):
    """a (X, Y, Z, T: a list, updated) += the entry (u, v, w), or -= it (``neg``).
    add-2008-hwcd-3 with the entry halved: 2Z becomes Z."""
    x, y, z, t = a
    if neg:  # -(x, y) = (-x, y): (y + x)/2 and (y - x)/2 swap, dxy changes sign
        u, v = v, u
    p = (y - x) * v % P
    q = (y + x) * u % P
    c = t * w % P
    e = q - p
    h = q + p
    if neg:
        f = z + c
        g = z - c
    else:
        f = z - c
        g = z + c
    a[0] = e * f
    a[1] = g * h
    a[2] = f * g % P
    a[3] = e * h


def _inv(z):
    """1/z = z^(p - 2) by ref10's addition chain: 254 squarings, in C (``pow`` by 2^k), and 11
    products, where ``pow(z, p - 2, p)`` also multiplies at each of the exponent's ~250 one bits
    (7.8 -> 4.1 M instructions on the unix port)."""
    z2 = z * z % P
    z9 = pow(z2, 4, P) * z % P
    z11 = z9 * z2 % P
    t = pow(z11, 2, P) * z9 % P  # z^(2^5 - 1)
    t = pow(t, 32, P) * t % P  # 2^10 - 1
    u = pow(t, 1 << 10, P) * t % P  # 2^20 - 1
    u = pow(u, 1 << 20, P) * u % P  # 2^40 - 1
    u = pow(u, 1 << 10, P) * t % P  # 2^50 - 1
    t = pow(u, 1 << 50, P) * u % P  # 2^100 - 1
    t = pow(t, 1 << 100, P) * t % P  # 2^200 - 1
    t = pow(t, 1 << 50, P) * u % P  # 2^250 - 1
    return pow(t, 32, P) * z11 % P  # 2^255 - 21


def _decode(s):
    """32 bytes -> affine (x, y), or None when not a canonical encoding of a curve point."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # x = u v^3 (u v^7)^((p-5)/8)
    v3 = v * v * v % P
    x = u * v3 * pow(u * v3 * v3 * v % P, (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != (P - u) % P:
            return None
        x = x * I % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def table(key, tables):
    """The path of ``key``'s table in directory ``tables``."""
    return tables + "/" + binascii.hexlify(key[:8]).decode()


def _entry(x, y, zi):
    """((y + x)/2, (y - x)/2, dxy) of the point (x : y : z), ``zi`` = 1/z."""
    x = x * zi % P
    y = y * zi % P
    return (y + x) * (P + 1) // 2 % P, (y - x) * (P + 1) // 2 % P, D * x * y % P


def write_table(key, tables):
    """Write the table of ``key`` (32 bytes) into directory ``tables``: to a temporary file,
    renamed when complete. ValueError when the key does not decode. Per digit position, Q =
    32^i P is made affine, then 2Q..16Q in three batches of five, one inversion each
    (Montgomery's trick): 204 inversions, not 816, with five points held at a time (a batch of
    15 took twice the heap: ~16 KiB)."""
    x = _decode(key)
    if x is None:
        raise ValueError("not a point")
    x, y = x
    a = [x, y, 1, x * y]
    path = table(key, tables)
    try:
        os.mkdir(tables)
    except OSError:
        pass  # there already
    f = open(path + ".tmp", "wb")
    try:
        h = hashlib.sha256(MAGIC + key)
        f.write(MAGIC + key)
        for _ in range(N):
            b = [_entry(a[0], a[1], _inv(a[2]))]  # Q
            q = b[0]
            for k in range(4):
                for e in b:
                    for n in e:
                        n = n.to_bytes(32, "little")
                        h.update(n)
                        f.write(n)
                if k == 3:
                    break
                b = []
                c = 1
                for j in range(5):  # the next five multiples, and the product of their z
                    _add(a, *q, False)
                    c = c * a[2] % P
                    b.append((a[0], a[1], a[2], c))
                c = _inv(c)
                for j in range(4, -1, -1):
                    x, y, z, n = b[j]
                    b[j] = _entry(x, y, c * b[j - 1][3] % P if j else c)
                    c = c * z % P
            _add(a, *b[4], False)  # 16Q + 16Q: the next position's Q
        f.write(h.digest())
    finally:
        f.close()
    try:
        os.remove(path)  # FAT: rename does not replace
    except OSError:
        pass
    os.rename(path + ".tmp", path)


def _open(key, tables):
    """The table of ``key``, open after its header; written first when missing or another's."""
    for _ in range(2):
        try:
            f = open(table(key, tables), "rb")
            if f.read(36) == MAGIC + key:
                return f
            f.close()
        except OSError:
            pass  # none yet
        write_table(key, tables)
    raise OSError("table")


def _intact(key, tables):
    """True when the table of ``key`` matches its digest; if not, it is written again."""
    f = _open(key, tables)
    h = hashlib.sha256(MAGIC + key)
    b = bytearray(96)
    for _ in range(N * H):
        f.readinto(b)
        h.update(b)
    ok = f.read(32) == h.digest()
    f.close()
    if not ok:
        write_table(key, tables)
    return ok


def verify(public, message, signature, tables):
    """True when ``signature`` (64 bytes) over ``message`` verifies with ``public`` (32), using
    the tables in directory ``tables``."""
    try:
        if len(public) != 32 or len(signature) != 64:
            return False
        public = bytes(public)
        signature = bytes(signature)
        r = signature[:32]
        s = signature[32:]
        if int.from_bytes(s, "little") >= L:
            return False
        from .sha512 import sha512

        k = (int.from_bytes(sha512(r + public + bytes(message)), "little") % L).to_bytes(
            32, "little")
        sha512 = None
        drop("sha512")  # its code and round constants (~3.3 KiB) leave before the point maths
        b = bytearray(32), bytearray(32), bytearray(32)
        for again in (0, 1):
            a = [0, 1, 1, 0]
            for key, n, sub in ((BASE, s, 0), (public, k, 1)):  # [S]B, then -[k]A
                f = _open(key, tables)
                n += b"\0"
                c = 0
                for i in range(N):
                    j = W * i
                    d = ((n[j >> 3] | n[(j >> 3) + 1] << 8) >> (j & 7) & 31) + c
                    c = d >= H
                    if c:
                        d -= 32
                    if d:
                        f.seek(36 + 96 * (H * i + abs(d) - 1))
                        for x in b:
                            f.readinto(x)
                        _add(a, int.from_bytes(b[0], "little"), int.from_bytes(b[1], "little"),
                             int.from_bytes(b[2], "little"), (d < 0) != sub)
                f.close()
            z = _inv(a[2])
            x = a[0] * z % P
            if (a[1] * z % P | (x & 1) << 255).to_bytes(32, "little") == r:
                return True
            if again or _intact(BASE, tables) & _intact(public, tables):
                return False  # a wrong signature, not a damaged table
    except (MemoryError, OSError):
        raise  # out of RAM or flash says nothing about the signature: the agent reports it
    except Exception:
        return False
