"""SHA-512 (FIPS 180-4) in pure Python: MicroPython's hashlib has no SHA-512 and Ed25519 needs
it. Slow (big ints), so it only ever hashes small inputs (the Sig_structure, R || A || M)."""

_M = 0xFFFFFFFFFFFFFFFF
_K = None
_H0 = (0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
       0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179)
_KHEX = (
    "428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b538"
    "59f111f1b605d019923f82a4af194f9bab1c5ed5da6d8118d807aa98a303024212835b0145706fbe"
    "243185be4ee4b28c550c7dc3d5ffb4e272be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235"
    "c19bf174cf692694e49b69c19ef14ad2efbe4786384f25e30fc19dc68b8cd5b5240ca1cc77ac9c65"
    "2de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5983e5152ee66dfab"
    "a831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa725"
    "06ca6351e003826f142929670a0e6e7027b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed"
    "53380d139d95b3df650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353b"
    "a2bfe8a14cf10364a81a664bbc423001c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218"
    "d69906245565a910f40e35855771202a106aa07032bbd1b819a4c116b8d2d0c81e376c085141ab53"
    "2748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb5b9cca4f7763e373"
    "682e6ff3d6b2b8a3748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
    "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532bca273eceea26619c"
    "d186b8c721c0c207eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6"
    "113f9804bef90dae1b710b35131c471b28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc"
    "431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a5fcb6fab3ad6faec6c44198c4a475817")


def _k():
    global _K
    if _K is None:
        _K = [int(_KHEX[i:i + 16], 16) for i in range(0, 1280, 16)]
    return _K


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M


def _block(h, blk, k):
    w = [int.from_bytes(blk[i:i + 8], "big") for i in range(0, 128, 8)]
    for t in range(16, 80):
        a = w[t - 15]
        b = w[t - 2]
        s0 = _rotr(a, 1) ^ _rotr(a, 8) ^ (a >> 7)
        s1 = _rotr(b, 19) ^ _rotr(b, 61) ^ (b >> 6)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M)
    a, b, c, d, e, f, g, hh = h
    for t in range(80):
        t1 = (hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)) + ((e & f) ^ (~e & g))
              + k[t] + w[t]) & _M
        t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M
        hh = g
        g = f
        f = e
        e = (d + t1) & _M
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M
    return [(x + y) & _M for x, y in zip(h, (a, b, c, d, e, f, g, hh))]


def sha512(data):
    """Digest (64 bytes) of ``data``."""
    k = _k()
    data = bytes(data)
    n = len(data)
    pad = b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    msg = data + pad
    h = list(_H0)
    for i in range(0, len(msg), 128):
        h = _block(h, msg[i:i + 128], k)
    out = bytearray()
    for x in h:
        out.extend(x.to_bytes(8, "big"))
    return bytes(out)
