"""Ed25519 signature verification (RFC 8032 section 5.1.7), pure Python for MicroPython.

Textbook extended twisted-Edwards coordinates and one joint double-and-add ([S]B - [k]A,
Straus/Shamir), then the result is encoded and compared with R: a non-canonical R can never
match. Rejects S >= L and points that do not decode. Verification only: no secret data here,
so constant time does not matter.
"""

from .sha512 import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
I = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # sqrt(-1)
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
B = (_BX, _BY, 1, _BX * _BY % P)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p, t=True):
    """2p; T only when an addition follows (``t``): saves two big-int operations."""
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P if t else 0)


def _inv(z):
    return pow(z, P - 2, P)


def _decode(s):
    """32 bytes -> point, or None when not a canonical encoding of a curve point."""
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
    return (x, y, 1, x * y % P)


def _encode(p):
    x, y, z, _ = p
    zi = _inv(z)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def verify(public, message, signature):
    """True when ``signature`` (64 bytes) over ``message`` verifies with ``public`` (32)."""
    try:
        if len(public) != 32 or len(signature) != 64:
            return False
        public = bytes(public)
        signature = bytes(signature)
        a = _decode(public)
        if a is None:
            return False
        r = signature[:32]
        s = int.from_bytes(signature[32:], "little")
        if s >= L:
            return False
        k = int.from_bytes(sha512(r + public + bytes(message)), "little") % L
        # [S]B + [L-k]A == R  (negating A: (-x, y))
        na = ((P - a[0]) % P, a[1], 1, (P - a[3]) % P)
        q = (0, 1, 1, 0)
        bna = _add(B, na)
        for i in range(255, -1, -1):
            sb = (s >> i) & 1
            kb = (k >> i) & 1
            q = _double(q, sb or kb)
            if sb and kb:
                q = _add(q, bna)
            elif sb:
                q = _add(q, B)
            elif kb:
                q = _add(q, na)
        return _encode(q) == r
    except MemoryError:
        raise  # out of RAM says nothing about the signature: the agent reports it as such
    except Exception:
        return False
