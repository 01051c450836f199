"""The device core under the real MicroPython unix port (``upy.run_upy``): codec, CBOR, a
manifest signed by ``cryptography`` verified by the pure-Python Ed25519, and a Block2 download
through a lossy in-process link (retransmissions exercised), numbers equal to CPython's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from upy import run_upy
from cc.provision import write_tables
from proto import manifest as pm
from proto.examples import examples


def test_coap_and_cbor_agree_with_cpython() -> None:
    report = {7: -5, 1: "dev-1", 2: "esp32-demo", 3: 1, 4: 0, 5: 0, 6: 2**40, "k": b"x"}
    code = f"""
from device import cbor, coap
v = {report!r}
data = cbor.dumps(v)
print(data.hex())
assert cbor.loads(data) == v
assert cbor.loads(cbor.dumps([b"x", None, True, False, -2**64, 2**64 - 1])) == [b"x", None, True, False, -2**64, 2**64 - 1]
t = cbor.loads(cbor.dumps(cbor.Tag(18, [1])))
assert t.tag == 18 and t.value == [1]
bad = 0
for b in (b"", b"\\x18", b"\\x5f\\xff", b"\\x62\\xff\\xfe", b"\\x81" * 9 + b"\\x00", b"\\x01\\x02",
          b"\\x5b\\x7f\\xff\\xff\\xff\\xff\\xff\\xff\\xff", b"\\xa2\\x01\\x01\\x01\\x02"):
    try:
        cbor.loads(b)
    except cbor.CBORError:
        bad += 1
print(bad)
req = coap.Request(coap.POST, "r", payload=data, options=[(coap.CONTENT_FORMAT, coap.uint(60))])
print(req.encode(0x1234, b"\\x0a\\x0b\\x0c\\x0d").hex())
r = coap.decode(bytes.fromhex("{examples()[7][1].hex()}"))
print(coap.code_str(r.code), r.etag.hex(), r.block2, r.size2)
for b in (b"", b"\\x80\\x01\\x00\\x01", b"\\x40\\x01\\x00\\x01\\xff", b"\\x40\\x01\\x00\\x01\\x1f"):
    try:
        coap.decode(b)
        print("accepted", b)
    except coap.CoapError:
        pass
"""
    out = run_upy(code).split()
    data = cbor2.dumps(report, canonical=True)
    assert out[0] == data.hex()
    assert out[1] == "8"
    from aiocoap import CON, POST, Message

    m = Message(code=POST, payload=data, uri_path=("r",), content_format=60)
    m.mtype, m.mid, m.token = CON, 0x1234, b"\x0a\x0b\x0c\x0d"
    assert out[2] == m.encode().hex()
    resp = Message.decode(examples()[7][1])
    assert out[3:] == ["2.05", resp.opt.etag.hex(), "(1,", "False,", "5)", "1024"]


def test_manifest_signed_by_cryptography_verifies_under_micropython(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"wasm test key").digest())
    pub = pm.public_bytes(key.public_key())
    other = pm.public_bytes(Ed25519PrivateKey.generate().public_key())
    signed = pm.sign(pm.build(seq=9, vendor="v.example", device_class="c", digest=bytes(32),
                              size=4096, uri="/f/00000000"), key)
    write_tables(tmp_path, [pub])
    code = f"""
import time
from device import manifest, ed25519, const
signed = bytes.fromhex("{signed.hex()}")
pub = bytes.fromhex("{pub.hex()}")
other = bytes.fromhex("{other.hex()}")
vendor = bytes.fromhex("{pm.vendor_id('v.example').hex()}")
klass = bytes.fromhex("{pm.class_id('v.example', 'c').hex()}")
m = manifest.check(signed, [other, pub], vendor, klass, 8, "{tmp_path}")
print(m[const.M_SEQ], m[const.M_SIZE], m[const.M_URI])
for trusted, seq, want in (([other], 8, const.RES_SIGNATURE_INVALID), ([pub], 9, const.RES_DOWNGRADE_REFUSED)):
    try:
        manifest.check(signed, trusted, vendor, klass, seq, "{tmp_path}")
        print("accepted")
    except manifest.Refused as e:
        print(e.result == want)
b = bytearray(signed)
b[-1] ^= 1
try:
    manifest.check(bytes(b), [pub], vendor, klass, 8, "{tmp_path}")
except manifest.Refused as e:
    print(e.result == const.RES_SIGNATURE_INVALID)
protected = const.PROTECTED
sig = signed[-64:]
msg = manifest.sig_structure(protected, manifest._unwrap(signed)[2])
n = 5
t = time.ticks_ms()
for _ in range(n):
    assert ed25519.verify(pub, msg, sig, "{tmp_path}")
print("ms", time.ticks_diff(time.ticks_ms(), t) / n)
"""
    out = run_upy(code, timeout=120).split()
    assert out[:6] == ["9", "4096", "/f/00000000", "True", "True", "True"]
    print("Ed25519 verify under the MicroPython unix port:", out[7], "ms")


def test_block2_download_through_lossy_link() -> None:
    code = """
import hashlib
import fakelink
from device import coap
img = bytes(range(256)) * 37 + b"end"
link = fakelink.LossyLink(fakelink.block_server(img, b"12345678"), loss=0.25, seed=11)
got = coap.run(fakelink.download("/f/abcdef01", szx=4), link)
assert got == img
print(hashlib.sha256(got).digest().hex(), link.stats["retransmits"], link.stats["dropped"], link.now)
# a dead link: every exchange fails after 5 transmissions and 2+4+8+16+32 = 62 s (rand 0..)
dead = fakelink.LossyLink(fakelink.block_server(img, b"x"), loss=1.0)
assert dead.request(coap.Request(coap.GET, "f/x")) is None
print(dead.stats["to_server"], dead.now)
"""
    out = run_upy(code).split()
    img = bytes(range(256)) * 37 + b"end"
    assert out[0] == hashlib.sha256(img).hexdigest()
    assert int(out[1]) > 5 and int(out[2]) > 5  # losses happened and were retransmitted
    assert out[3] != "0"
    assert out[4] == "5"
    assert 62000 <= int(out[5]) <= 93000


def test_fuzz_under_micropython_only_codec_errors_escape() -> None:
    """MicroPython raises other exception types than CPython (UnicodeError, IndexError...):
    prove on the real interpreter that random and mutated input only raises the codec errors."""
    samples = [cbor2.dumps(x) for x in ([1, b"ab", "t", {1: [None, True]}], {"k": -2**63}, 2**64 - 1)]
    samples += [d for _, d in examples()]
    code = f"""
import fakelink
from device import cbor, coap
prng = fakelink.Lcg(5)
samples = [bytes.fromhex(h) for h in {[s.hex() for s in samples]!r}]
n = 0
for i in range(3000):
    if i % 2:
        b = bytes(int(prng.random() * 256) for _ in range(int(prng.random() * 24)))
    else:
        b = bytearray(samples[i // 2 % len(samples)])
        for _ in range(1 + int(prng.random() * 3)):
            b[int(prng.random() * len(b))] = int(prng.random() * 256)
        b = bytes(b[:int(prng.random() * (len(b) + 1))] if prng.random() < 0.3 else b)
    try:
        cbor.loads(b)
    except cbor.CBORError:
        n += 1
    try:
        coap.decode(b)
    except coap.CoapError:
        n += 1
print(n)
"""
    assert int(run_upy(code, timeout=120).strip()) > 1000


def test_lossy_download_is_identical_on_both_interpreters() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "upylib"))
    import fakelink

    from device import coap

    code = """
import fakelink
from device import coap
img = bytes(range(200)) * 11
link = fakelink.LossyLink(fakelink.block_server(img, b"e"), loss=0.3, seed=3)
assert coap.run(fakelink.download("f/1", szx=3), link) == img
s = link.stats
print(s["to_server"], s["to_device"], s["dropped"], s["retransmits"], s["failed"], link.now)
"""
    img = bytes(range(200)) * 11
    link = fakelink.LossyLink(fakelink.block_server(img, b"e"), loss=0.3, seed=3)
    assert coap.run(fakelink.download("f/1", szx=3), link) == img
    s = link.stats
    want = [s["to_server"], s["to_device"], s["dropped"], s["retransmits"], s["failed"], link.now]
    assert [int(x) for x in run_upy(code).split()] == want


def test_harness_reports_failures() -> None:
    import pytest

    with pytest.raises(AssertionError, match="KeyError: '?boom"):
        run_upy("print('before')\nraise KeyError('boom')")
    with pytest.raises(AssertionError, match="exit 4"):
        run_upy("import sys\nsys.exit(4)")
    assert run_upy("import sys\nprint(sys.implementation.name)").split() == ["micropython"]


def test_out_of_ram_in_verify_and_cbor_is_memoryerror_not_a_verdict(tmp_path: Path) -> None:
    """With the heap nearly full, ``ed25519.verify`` and ``cbor.loads`` raise MemoryError: never
    False (a "bad signature") nor CBORError (a "bad input")."""
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"oom").digest())
    msg = bytes(range(100))
    sig = key.sign(msg)
    pub = pm.public_bytes(key.public_key())
    data = cbor2.dumps([b"x" * 300, {i: "y" * 40 for i in range(20)}])
    write_tables(tmp_path, [pub])
    code = f"""
import gc
from device import ed25519, cbor
pub, msg, sig = bytes.fromhex("{pub.hex()}"), bytes.fromhex("{msg.hex()}"), bytes.fromhex("{sig.hex()}")
data = bytes.fromhex("{data.hex()}")
assert ed25519.verify(pub, msg, sig, "{tmp_path}") and cbor.loads(data)
def starved(f):
    # the heap filled to its last small hole (a chain of links: no list storage to grow), then
    # the last 4 links let go: room for a few small objects, not for the work
    ballast = None
    for size in (256, 16):
        try:
            while True:
                ballast = [bytearray(size), ballast]
        except MemoryError:
            pass
    ballast = ballast[1][1][1][1]
    gc.collect()
    try:
        return repr(f())
    except MemoryError:
        return "MemoryError"
    finally:
        ballast = None
print(starved(lambda: ed25519.verify(pub, msg, sig, "{tmp_path}")))
print(starved(lambda: cbor.loads(data)))
"""
    assert run_upy(code, heap="64k").split() == ["MemoryError", "MemoryError"]
