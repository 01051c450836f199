"""The byte-level block fast path agrees with aiocoap's codec, and declines what it must."""

from __future__ import annotations

import warnings

from aiocoap import CON, GET, NON, POST, Message
from aiocoap.optiontypes import BlockOption
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.blockwire import encode_block_response, parse_block_get


def encode(mtype=CON, mid=1, token=b"\x01", code=GET, payload=b"", **opts) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        m = Message(code=code, payload=payload, **opts)
        m.mtype, m.mid, m.token = mtype, mid, token
    return m.encode()


@settings(max_examples=150, deadline=None)
@given(mtype=st.sampled_from([CON, NON]), mid=st.integers(0, 0xFFFF),
       token=st.binary(max_size=8), image=st.text("0123456789abcdef", min_size=1, max_size=20),
       num=st.none() | st.integers(0, 2**20 - 1), szx=st.integers(0, 6),
       host=st.none() | st.just("gw.example"), size2=st.none() | st.just(0))
def test_parse_agrees_with_aiocoap(mtype, mid, token, image, num, szx, host, size2):
    opts = {"uri_path": ("f", image)}
    if num is not None:
        opts["block2"] = BlockOption.BlockwiseTuple(num, False, szx)
    if host:
        opts["uri_host"] = host
    if size2 is not None:
        opts["size2"] = size2
    got = parse_block_get(encode(mtype, mid, token, **opts))
    assert got == (int(mtype), mid, token, image, num or 0, szx if num is not None else 6)


@settings(max_examples=150, deadline=None)
@given(mtype=st.sampled_from([1, 2]), mid=st.integers(0, 0xFFFF), token=st.binary(max_size=8),
       num=st.integers(0, 2**20 - 1), more=st.booleans(), szx=st.integers(0, 6),
       size=st.integers(0, 2**31), payload=st.binary(max_size=1024))
def test_encode_agrees_with_aiocoap(mtype, mid, token, num, more, szx, size, payload):
    etag = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    m = Message.decode(encode_block_response(mtype, mid, token, etag, num, more, szx, size,
                                             payload))
    assert (int(m.mtype), m.mid, m.token, m.code.dotted) == (mtype, mid, token, "2.05")
    assert m.opt.etag == etag and m.opt.size2 == size and m.payload == payload
    assert tuple(m.opt.block2) == (num, more, szx)


def test_declines_everything_else():
    assert parse_block_get(encode(uri_path=("r",))) is None
    assert parse_block_get(encode(uri_path=("f",))) is None
    assert parse_block_get(encode(uri_path=("f", "a", "b"))) is None
    assert parse_block_get(encode(code=POST, uri_path=("f", "abc"))) is None
    assert parse_block_get(encode(uri_path=("f", "abc"), payload=b"x")) is None
    assert parse_block_get(encode(uri_path=("f", "abc"), observe=0)) is None
    assert parse_block_get(encode(uri_path=("f", "abc"), uri_query=("x",))) is None
    assert parse_block_get(encode(uri_path=("f", "abc"),
                                  block2=BlockOption.BlockwiseTuple(1, False, 7))) is None
    for junk in (b"", b"\x40", b"\x40\x01\x00", b"\x48\x01\x00\x01", b"\x80\x01\x00\x01",
                 b"\x40\x01\x00\x01\xb1", b"\x40\x01\x00\x01\xf0", b"\x40\x01\x00\x01\xd1"):
        assert parse_block_get(junk) is None
