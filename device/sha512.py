"""SHA-512 (FIPS 180-4) in pure Python: MicroPython's hashlib has no SHA-512 and Ed25519 needs
it. It only ever hashes small inputs (the Sig_structure, R || A || M).

Heap: every 64-bit word is a pair of 32-bit halves, so all arithmetic stays in small ints (no
big-int allocation per operation on a 64-bit port: ~0.6 MB per verify less than 64-bit words);
the round constants stay packed in one bytes constant and are read per round (no list kept for
the module's life); the message schedule is one array of 32-bit words allocated per call and
filled in place (768 bytes where a list took 1280: a block a fragmented heap finds more easily).
"""

from array import array

_M = 0xFFFFFFFF
_H0 = (0x6A09E667, 0xF3BCC908, 0xBB67AE85, 0x84CAA73B, 0x3C6EF372, 0xFE94F82B, 0xA54FF53A,
       0x5F1D36F1, 0x510E527F, 0xADE682D1, 0x9B05688C, 0x2B3E6C1F, 0x1F83D9AB, 0xFB41BD6B,
       0x5BE0CD19, 0x137E2179)
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17")


def _be(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def _block(h, blk, w):
    for t in range(32):
        w[t] = _be(blk, 4 * t)
    for t in range(32, 160, 2):
        xh = w[t - 30]
        xl = w[t - 29]  # s0: rotr 1, rotr 8, shr 7
        s0h = ((xh >> 1) | ((xl & 1) << 31)) ^ ((xh >> 8) | ((xl & 0xFF) << 24)) ^ (xh >> 7)
        s0l = (((xl >> 1) | ((xh & 1) << 31)) ^ ((xl >> 8) | ((xh & 0xFF) << 24))
               ^ ((xl >> 7) | ((xh & 0x7F) << 25)))
        xh = w[t - 4]
        xl = w[t - 3]  # s1: rotr 19, rotr 61, shr 6
        s1h = (((xh >> 19) | ((xl & 0x7FFFF) << 13)) ^ ((xl >> 29) | ((xh & 0x1FFFFFFF) << 3))
               ^ (xh >> 6))
        s1l = (((xl >> 19) | ((xh & 0x7FFFF) << 13)) ^ ((xh >> 29) | ((xl & 0x1FFFFFFF) << 3))
               ^ ((xl >> 6) | ((xh & 0x3F) << 26)))
        lo = w[t - 31] + s0l + w[t - 13] + s1l
        w[t] = (w[t - 32] + s0h + w[t - 14] + s1h + (lo >> 32)) & _M
        w[t + 1] = lo & _M
    ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl = h
    k = _K
    for t in range(0, 160, 2):
        # S1(e): rotr 14, rotr 18, rotr 41
        s1h = (((eh >> 14) | ((el & 0x3FFF) << 18)) ^ ((eh >> 18) | ((el & 0x3FFFF) << 14))
               ^ ((el >> 9) | ((eh & 0x1FF) << 23)))
        s1l = (((el >> 14) | ((eh & 0x3FFF) << 18)) ^ ((el >> 18) | ((eh & 0x3FFFF) << 14))
               ^ ((eh >> 9) | ((el & 0x1FF) << 23)))
        lo = hl + s1l + ((el & fl) ^ (~el & gl)) + _be(k, 4 * t + 4) + w[t + 1]
        t1h = hh + s1h + ((eh & fh) ^ (~eh & gh)) + _be(k, 4 * t) + w[t] + (lo >> 32)
        t1l = lo & _M
        # S0(a): rotr 28, rotr 34, rotr 39
        s0h = (((ah >> 28) | ((al & 0xFFFFFFF) << 4)) ^ ((al >> 2) | ((ah & 3) << 30))
               ^ ((al >> 7) | ((ah & 0x7F) << 25)))
        s0l = (((al >> 28) | ((ah & 0xFFFFFFF) << 4)) ^ ((ah >> 2) | ((al & 3) << 30))
               ^ ((ah >> 7) | ((al & 0x7F) << 25)))
        lo = s0l + ((al & bl) ^ (al & cl) ^ (bl & cl))
        t2h = s0h + ((ah & bh) ^ (ah & ch) ^ (bh & ch)) + (lo >> 32)
        t2l = lo & _M
        hh = gh  # one by one: an assignment of more than 3 names builds a tuple
        hl = gl  # (64 bytes per round on MicroPython, 10 KiB a block)
        gh = fh
        gl = fl
        fh = eh
        fl = el
        lo = dl + t1l
        eh = (dh + t1h + (lo >> 32)) & _M
        el = lo & _M
        dh = ch
        dl = cl
        ch = bh
        cl = bl
        bh = ah
        bl = al
        lo = t1l + t2l
        ah = (t1h + t2h + (lo >> 32)) & _M
        al = lo & _M
    for i, x in enumerate((ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl)):
        h[i] = h[i] + x
    for i in range(0, 16, 2):  # carry each word's low half into its high half
        h[i] = (h[i] + (h[i + 1] >> 32)) & _M
        h[i + 1] &= _M


def sha512(data):
    """Digest (64 bytes) of ``data``."""
    data = bytes(data)
    n = len(data)
    msg = data + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    data = None
    h = list(_H0)
    w = array("I", range(160))  # every word is written before it is read
    for i in range(0, len(msg), 128):
        _block(h, memoryview(msg)[i:i + 128], w)
    out = bytearray(64)
    for i in range(16):
        out[4 * i:4 * i + 4] = h[i].to_bytes(4, "big")
    return bytes(out)
