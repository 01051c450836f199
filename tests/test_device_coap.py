"""device/coap.py: codec against aiocoap, fuzzing, Exchange reliability, and UdpLink on a real
socket against libcoap's coap-server."""

from __future__ import annotations

import socket
import subprocess
import time
import warnings

import pytest
from aiocoap import Message as AMessage
from aiocoap.numbers.types import Type
from hypothesis import given, settings
from hypothesis import strategies as st

from device import coap, udp

# options aiocoap treats as opaque (If-Match, ETag, unknown numbers): it hands back raw bytes
opt_nums = st.sampled_from([1, 4, 270, 300, 1000, 2000, 65000])
options = st.lists(st.tuples(opt_nums, st.binary(max_size=300)), max_size=5)


def _sorted(opts):
    return sorted(opts, key=lambda o: o[0])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.integers(1, 255), st.integers(0, 0xFFFF), st.binary(max_size=8),
       options, st.binary(max_size=100))
def test_round_trip_and_aiocoap_agrees(mtype, code, mid, token, opts, payload) -> None:
    data = coap.encode(mtype, code, mid, token, opts, payload)
    m = coap.decode(data)
    assert (m.mtype, m.code, m.mid, m.token, m.payload) == (mtype, code, mid, token, payload)
    assert m.options == _sorted(opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = AMessage.decode(data)
    assert (a.mtype, int(a.code), a.mid, a.token, a.payload) == (Type(mtype), code, mid, token, payload)
    assert [(int(o.number), o.encode()) for o in a.opt.option_list()] == _sorted(opts)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_fuzz_decode_only_coap_error(data: bytes) -> None:
    try:
        coap.decode(data)
    except coap.CoapError:
        pass


@pytest.mark.parametrize("bad", [
    b"", b"\x40\x01\x00", b"\x80\x01\x00\x01", b"\x49\x01\x00\x01" + bytes(9),  # short, v2, TKL 9
    b"\x42\x01\x00\x01\x01",  # truncated token
    b"\x40\x01\x00\x01\xff",  # payload marker, no payload
    b"\x40\x01\x00\x01\xf1\x00", b"\x40\x01\x00\x01\x1f",  # nibble 15
    b"\x40\x01\x00\x01\xd1", b"\x40\x01\x00\x01\xe1\x00",  # truncated extended delta
    b"\x40\x01\x00\x01\x15",  # option value beyond the end
    b"\x41\x00\x00\x01\x01",  # empty message with a token
])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(coap.CoapError):
        coap.decode(bad)


def test_helpers() -> None:
    assert coap.code(2, 5) == 0x45 and coap.code_str(0x45) == "2.05" and coap.code_str(0x84) == "4.04"
    assert coap.uint(0) == b"" and coap.uint(256) == b"\x01\x00" and coap.to_uint(b"\x01\x00") == 256
    assert coap.parse_block(coap.block_value(5, True, 6)) == (5, True, 6)
    req = coap.Request(coap.GET, "/f/ab12cd34", block2=(1, 5))
    m = coap.decode(req.encode(7, b"\x0e"))
    assert m.mtype == coap.CON and m.options == [(11, b"f"), (11, b"ab12cd34"), (23, b"\x15")]


# --- Exchange -------------------------------------------------------------------------------

TOKEN = b"\x01\x02\x03\x04"


def _ex(con=True, **kw) -> coap.Exchange:
    req = coap.Request(coap.GET, "f/x", con=con)
    return coap.Exchange(req, 0x1234, TOKEN, 1000, lambda: 0.5, **kw)


def _resp(mtype=coap.ACK, mid=0x1234, token=TOKEN, code=0x45, payload=b"hi") -> bytes:
    return coap.encode(mtype, code, mid, token, [(coap.ETAG, b"e"), (coap.SIZE2, b"\x10")], payload)


def test_retransmission_timing_then_give_up() -> None:
    ex = _ex()
    assert len(ex.outgoing) == 1 and ex.deadline == 1000 + 2500  # 2000 * (1 + 0.5 * 0.5)
    ex.outgoing.clear()
    ex.on_timeout(3499)  # early: nothing
    assert ex.outgoing == [] and not ex.done
    times = []
    for _ in range(4):
        t = ex.deadline
        ex.on_timeout(t)
        assert len(ex.outgoing) == 1
        ex.outgoing.clear()
        times.append(ex.deadline - t)
    assert times == [5000, 10000, 20000, 40000]
    ex.on_timeout(ex.deadline)
    assert ex.done and ex.failed and ex.response is None and ex.outgoing == []


def test_max_wait_caps_the_exchange() -> None:
    ex = _ex(max_wait_ms=6000)
    ex.on_timeout(ex.deadline)  # first retransmission at 3500, next would be 8500 > 7000
    assert ex.deadline == 7000
    ex.on_timeout(7000)
    assert ex.failed


def test_piggybacked_response_duplicates_and_strays() -> None:
    ex = _ex()
    ex.on_datagram(b"\xff\x00", 1100)  # malformed
    ex.on_datagram(_resp(mid=0x9999), 1100)  # stray ACK
    ex.on_datagram(_resp(mtype=coap.CON, token=b"zz"), 1100)  # stray separate response
    ex.on_datagram(_resp(token=b"zz"), 1100)  # right mid, wrong token
    assert not ex.done and ex.outgoing == [ex.datagram]
    ex.on_datagram(_resp(), 1200)
    assert ex.done and not ex.failed and ex.deadline is None
    r = ex.response
    assert (r.code, r.payload, r.etag, r.size2, r.block2, r.max_age) == (0x45, b"hi", b"e", 16, None, None)
    ex.on_datagram(_resp(payload=b"other"), 1300)  # duplicate ACK
    assert ex.response.payload == b"hi"


def test_rst_fails() -> None:
    ex = _ex()
    ex.on_datagram(coap.encode(coap.RST, 0, 0x1234, b"", [], b""), 1100)
    assert ex.done and ex.failed


def test_empty_ack_then_separate_con_response_is_acked() -> None:
    ex = _ex()
    ex.outgoing.clear()
    ex.on_datagram(coap.encode(coap.ACK, 0, 0x1234, b"", [], b""), 1500)
    assert not ex.done and ex.deadline == 1000 + 93000  # RFC 7252's MAX_TRANSMIT_WAIT: 93 s
    ex.on_timeout(3500)  # no retransmission after the ACK
    assert ex.outgoing == [] and not ex.done
    ex.on_datagram(_resp(mtype=coap.CON, mid=0x7777), 5000)
    assert ex.done and ex.response.payload == b"hi"
    ack = coap.decode(ex.outgoing.pop())
    assert (ack.mtype, ack.code, ack.mid, ack.token) == (coap.ACK, 0, 0x7777, b"")
    ex.on_datagram(_resp(mtype=coap.CON, mid=0x7777), 6000)  # its retransmission: ACK again
    assert len(ex.outgoing) == 1


def test_separate_wait_times_out() -> None:
    ex = _ex(max_wait_ms=10000)
    ex.on_datagram(coap.encode(coap.ACK, 0, 0x1234, b"", [], b""), 1500)
    ex.on_timeout(11000)
    assert ex.failed


def test_non_request() -> None:
    ex = _ex(con=False, max_wait_ms=5000)
    assert coap.decode(ex.outgoing[0]).mtype == coap.NON and ex.deadline == 6000
    ex.on_datagram(_resp(mtype=coap.NON, mid=0x4444), 1200)
    assert ex.done and ex.outgoing == [ex.datagram]  # no ACK for a NON
    ex2 = _ex(con=False, max_wait_ms=5000)
    ex2.on_timeout(6000)
    assert ex2.failed and ex2.outgoing == [ex2.datagram]  # never retransmitted


def test_run_drives_a_generator() -> None:
    class Echo:
        def request(self, req):
            if req.path == "lost":
                return None
            return coap.decode(_resp(payload=req.path.encode()))

    def agent():
        a = yield coap.Request(coap.GET, "one")
        b = yield coap.Request(coap.GET, "lost")
        return a.payload, b

    assert coap.run(agent(), Echo()) == (b"one", None)


# --- UdpLink over real UDP against libcoap -----------------------------------------------------


def _free_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host,family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_udplink_against_libcoap(host: str, family: int) -> None:
    port = _free_port(family, host)
    srv = subprocess.Popen(["coap-server-notls", "-A", host, "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        link = udp.UdpLink(host, port, timeout_scale=0.1)
        try:
            r = None
            for _ in range(20):  # the server needs a moment to bind
                r = link.request(coap.Request(coap.GET, "/"))
                if r is not None:
                    break
                time.sleep(0.1)
            assert r is not None and r.code == 0x45 and b"libcoap" in bytes(r.payload)
            r = link.request(coap.Request(coap.GET, "nothing-here"))
            assert r is not None and coap.code_str(r.code) == "4.04"
        finally:
            link.close()
    finally:
        srv.terminate()
        srv.wait(5)


def test_udplink_gives_up_on_silence() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # bound, never answers
        sink.bind(("127.0.0.1", 0))
        link = udp.UdpLink("127.0.0.1", sink.getsockname()[1], timeout_scale=0.01)
        assert link.request(coap.Request(coap.GET, "x")) is None
        link.close()
        n = 0
        sink.settimeout(0.1)
        try:
            while n < 10:
                sink.recv(100)
                n += 1
        except TimeoutError:
            pass
        assert n == 5


def test_lossy_download_on_cpython_matches_micropython_numbers() -> None:
    """The same seeded lossy link as tests/test_upy_core.py, here on CPython."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "upylib"))
    import fakelink

    img = bytes(range(256)) * 37 + b"end"
    link = fakelink.LossyLink(fakelink.block_server(img, b"12345678"), loss=0.25, seed=11)
    assert coap.run(fakelink.download("/f/abcdef01", szx=4), link) == img
    assert link.stats["retransmits"] > 5 and link.stats["failed"] == 0
