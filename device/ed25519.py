"""Ed25519 signature verification (RFC 8032 section 5.1.7), pure Python for MicroPython.

Checks [S]B - [k]A == R: one joint loop over signed-window digits of S (width 5: B's odd
multiples, one bytes constant) and of k (width 4: -A's odd multiples, built per call), so ~253
doublings and ~93 additions (bit by bit: ~190); the result is encoded and compared with R (a
non-canonical R never matches). Rejects S >= L and points that do not decode. Verification
only: no secret data here, so constant time does not matter.

Heap: every big-int operation allocates its result (two GC blocks at least), so the maths is
written for fewer results: squares as ``pow(v, 2, P)`` (MicroPython reduces inside, freeing
its temporaries: one result instead of a product and a remainder), sums and differences left
unreduced wherever a square or a reducing product follows, points as loose locals (no tuple
per doubling), tables in the (y - x, y + x, 2dt, 2z) form an addition uses directly. Measured
on the unix port (bench/footprint.py): 1.22 MB -> 0.61 MB allocated per verify, 87.6 M -> 79.1
M instructions. 256 KB is out of reach this way: 253 doublings of >= 11 results each."""

from .sha512 import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
I = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # sqrt(-1)
D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2d
_BT = (  # B, 3B, .. 15B (affine) as y - x, y + x, 2dxy: 32 bytes each, little-endian
    b"\x3e\x91\x40\xd7\x05\x39\x10\x9d\xb3\xbe\x40\xd1\x05\x9f\x39\xfd\x09\x8a\x8f\x68\x34\x84\xc1\xa5\x67\x12\xf8\x98\x92\x2f\xfd\x44"
    b"\x85\x3b\x8c\xf5\xc6\x93\xbc\x2f\x19\x0e\x8c\xfb\xc6\x2d\x93\xcf\xc2\x42\x3d\x64\x98\x48\x0b\x27\x65\xba\xd4\x33\x3a\x9d\xcf\x07"
    b"\x68\xaa\x7a\x87\x05\x12\xc9\xab\x9e\xc4\xaa\xcc\x23\xe8\xd9\x26\x8c\x59\x43\xdd\xcb\x7d\x1b\x5a\xa8\x65\x0c\x9f\x68\x7b\x11\x6f"
    b"\x65\xd2\xfc\xa4\xe8\x1f\x61\x56\x7d\xba\xc1\xe5\xfd\x53\xd3\x3b\xbd\xd6\x4b\x21\x1a\xf3\x31\x81\x62\xda\x5b\x55\x87\x15\xb9\x2a"
    b"\x30\x97\xee\x4c\xa8\xb0\x25\xaf\x8a\x4b\x86\xe8\x30\x84\x5a\x02\x32\x67\x01\x9f\x02\x50\x1b\xc1\xf4\xf8\x80\x9a\x1b\x4e\x16\x7a"
    b"\x89\xd8\xd0\x0d\x3f\x93\xae\x14\x62\xda\x35\x1c\x22\x23\x94\x58\x4c\xdb\xf2\x8c\x45\xe5\x70\xd1\xc6\xb4\xb9\x12\xaf\x26\x28\x5a"
    b"\xba\xd6\x47\xa4\xc3\x82\x91\x7f\xb7\x29\x27\x4b\xd1\x14\x00\xd5\x87\xa0\x64\xb8\x1c\xf1\x3c\xe3\xf3\x55\x1b\xeb\x73\x7e\x4a\x15"
    b"\x33\xbb\xa5\x08\x44\xbc\x12\xa2\x02\xed\x5e\xc7\xc3\x48\x50\x8d\x44\xec\xbf\x5a\x0c\xeb\x1b\xdd\xeb\x06\xe2\x46\xf1\xcc\x45\x29"
    b"\x85\x82\x2a\x81\xf1\xdb\xbb\xbc\xfc\xd1\xbd\xd0\x07\x08\x0e\x27\x2d\xa7\xbd\x1b\x0b\x67\x1b\xb4\x9a\xb6\x3b\x6b\x69\xbe\xaa\x43"
    b"\xb1\x21\x32\xaa\x9a\x2c\x6f\xba\xa7\x23\xba\x3b\x53\x21\xa0\x6c\x3a\x2c\x19\x92\x4f\x76\xea\x9d\xe0\x17\x53\x2e\x5d\xdd\x6e\x1d"
    b"\xbf\xa3\x4e\x94\xd0\x5c\x1a\x6b\xd2\xc0\x9d\xb3\x3a\x35\x70\x74\x49\x2e\x54\x28\x82\x52\xb2\x71\x7e\x92\x3c\x28\x69\xea\x1b\x46"
    b"\xa2\xb3\xb8\x01\xc8\x6d\x83\xf1\x9a\xa4\x3e\x05\x47\x5f\x03\xb3\xf3\xad\x77\x58\xba\x41\x9c\x52\xa7\x90\x0f\x6a\x1c\xbb\x9f\x7a"
    b"\x64\x80\x9d\x03\x7e\x21\x6e\xf3\x9b\x41\x20\xf5\xb6\x81\xa0\x98\x44\xb0\x5e\xe7\x08\xc6\xcb\x96\x8f\x9c\xdc\xfa\x51\x5a\xc0\x49"
    b"\x2f\x63\xa8\xa6\x8a\x67\x2e\x9b\xc5\x46\xbc\x51\x6f\x9e\x50\xa6\xb5\xf5\x86\xc6\xc9\x33\xb2\xce\x59\x7f\xdd\x8a\x33\xed\xb9\x34"
    b"\x1b\xaf\x45\x90\xbf\xe8\xb4\x06\x2f\xd2\x19\xa7\xe8\x83\xff\xe2\x16\xcf\xd4\x93\x29\xfc\xf6\xaa\x06\x8b\x00\x1b\x02\x72\xc1\x73"
    b"\x48\x43\x86\x49\x02\x5b\x5f\x31\x81\x83\x08\x77\x69\xb3\xd6\x3e\x95\xeb\x8d\x6a\x55\x75\xa0\xa3\x7f\xc7\xd5\x29\x80\x59\xab\x18"
    b"\xde\x2a\x80\x8a\x84\x00\xbf\x2f\x27\x2e\x30\x02\xcf\xfe\xd9\xe5\x06\x34\x70\x17\x71\x84\x3e\x11\xaf\x8f\x6d\x54\xe2\xaa\x75\x42"
    b"\xe9\x89\x60\xfd\xc5\x2c\x2b\xd8\xa4\xe4\x82\x32\xa1\xb4\x1e\x03\x22\x86\x1a\xb5\x99\x11\x31\x44\x48\xf9\x3d\xb5\x22\x55\xc6\x3d"
    b"\x93\xbf\x7f\x32\x3b\x01\x6f\x50\x6b\x6f\x77\x9b\xc9\xeb\xfc\xae\x68\x59\xad\xaa\x32\xb2\x12\x9d\xa7\x24\x60\x17\x2d\x88\x67\x02"
    b"\x6d\x7f\x00\xa2\x22\xc2\x70\xbf\xdb\xde\xbc\xb5\x9a\xb3\x84\xbf\x07\xba\x07\xfb\x12\x0e\x7a\x53\x41\xf2\x46\xc3\xee\xd7\x4f\x23"
    b"\x78\xa3\x2e\x73\x19\xa1\x60\x53\x71\xd4\x8d\xdf\xb1\xe6\x37\x24\x33\xe5\xa7\x91\xf8\x37\xef\xa2\x63\x78\x09\xaa\xfd\xa6\x7b\x49"
    b"\x0b\xcf\x8c\x46\x86\xcd\x0b\x04\xd6\x10\x99\x2a\xa4\x9b\x82\xd3\x92\x51\xb2\x07\x08\x30\x08\x75\xbf\x5e\xd0\x18\x42\xcd\xb5\x43"
    b"\xa0\xea\xcf\x13\x03\xcc\xce\x24\x6d\x24\x9c\x18\x8d\xc2\x48\x86\xd0\xd4\xf2\xc1\xfa\xbd\xbd\x2d\x2b\xe7\x2d\xf1\x17\x29\xe2\x61"
    b"\x16\xb5\xd0\x9b\x2f\x76\x9a\x5d\xee\xde\x3f\x37\x4e\xaf\x38\xeb\x70\x42\xd6\x93\x7d\x5a\x2e\x03\x42\xd8\xe4\x0a\x21\x61\x1d\x51")


def _naf(b, w):
    """Width-``w`` signed digits of the little-endian scalar ``b`` (< 2**253): a bytearray,
    digit i (0, or odd with |d| < 2**(w-1)) stored as d & 0xFF. Read from the bytes, so no
    big-int shift per bit."""
    out = bytearray(256)
    b = bytes(b) + b"\0\0"
    width = 1 << w
    pos = 0
    carry = 0
    while pos < 256:
        j = pos >> 3
        win = (((b[j] | (b[j + 1] << 8)) >> (pos & 7)) & (width - 1)) + carry
        if not win & 1:
            pos += 1
            continue
        if win < width >> 1:
            carry = 0
            out[pos] = win
        else:
            carry = 1
            out[pos] = win - width + 256
        pos += w
    return out


def _add(x, y, z, t, ym, yp, t2d, z2, neg, tn=True):
    """(x, y, z, t) + the point cached as (y - x, y + x, 2dt, 2z), or minus it (``neg``);
    ``z2`` None: an affine point (2z = 2), added to a reduced ``z``. Inputs may be unreduced
    (any sign); the outputs are unreduced products (add-2008-hwcd-3)."""
    if neg:  # -(x, y) = (-x, y): swaps y - x with y + x and negates t
        ym, yp = yp, ym
    a = (y - x) * ym % P
    b = (y + x) * yp % P
    c = t * t2d % P
    d = z + z if z2 is None else z * z2 % P
    e = b - a
    h = b + a
    if neg:
        f = d + c
        g = d - c
    else:
        f = d - c
        g = d + c
    return e * f, g * h, f * g, e * h if tn else 0  # t: only if an addition follows


def _int(i):
    return int.from_bytes(_BT[i:i + 32], "little")


def _cached(x, y, z, t):
    return ((y - x) % P, (y + x) % P, t * D2 % P, 2 * z % P)


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
        s = signature[32:]
        if int.from_bytes(s, "little") >= L:
            return False
        k = (int.from_bytes(sha512(r + public + bytes(message)), "little") % L).to_bytes(
            32, "little")
        sn = _naf(s, 5)
        kn = _naf(k, 4)
        # -A, 3(-A), 5(-A), 7(-A), cached
        x = (P - a[0]) % P
        y = a[1]
        a = None
        t = x * y % P
        at = [(y - x) % P, (y + x) % P, t * D2 % P, 2]
        q = _add(x, y, 1, t, at[0], at[1], at[2], None, False)  # 2(-A)
        c2 = _cached(*q)
        q = _add(q[0], q[1], q[2], q[3], at[0], at[1], at[2], 2, False)
        at.extend(_cached(*q))
        for _ in range(2):
            q = _add(q[0], q[1], q[2], q[3], c2[0], c2[1], c2[2], c2[3], False)
            at.extend(_cached(*q))
        q = c2 = None
        top = 255
        while top >= 0 and not (sn[top] or kn[top]):
            top -= 1
        x, y, z, t = 0, 1, 1, 0
        for i in range(top, -1, -1):
            ds = sn[i]
            dk = kn[i]
            # doubling (dbl-2008-hwcd, a = -1), reduced: its squares and a B addition then
            # work on 8-digit numbers (unreduced: -13 % allocation, +19 % instructions);
            # t only when an addition follows
            a = pow(x, 2, P)
            b = pow(y, 2, P)
            h = a + b
            e = h - pow(x + y, 2, P)
            g = a - b
            f = pow(z, 2, P) * 2 + g
            x = e * f % P
            y = g * h % P
            z = f * g % P
            t = e * h if ds or dk else 0
            if ds:
                j = 96 * ((ds if ds < 128 else 256 - ds) >> 1)
                x, y, z, t = _add(x, y, z, t, _int(j), _int(j + 32), _int(j + 64), None,
                                  ds > 127, dk)
            if dk:
                j = 4 * ((dk if dk < 128 else 256 - dk) >> 1)
                x, y, z, t = _add(x, y, z, t, at[j], at[j + 1], at[j + 2], at[j + 3], dk > 127)
        zi = pow(z, P - 2, P)
        x = x * zi % P
        y = y * zi % P
        return (y | ((x & 1) << 255)).to_bytes(32, "little") == r
    except MemoryError:
        raise  # out of RAM says nothing about the signature: the agent reports it as such
    except Exception:
        return False
