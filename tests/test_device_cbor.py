"""device/cbor.py: agreement with cbor2 both ways, strictness, and fuzzing."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device import cbor

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
scalars = st.one_of(ints, st.binary(max_size=40), st.text(max_size=20), st.booleans(), st.none())
keys = st.one_of(st.integers(min_value=-(2**64), max_value=2**64 - 1), st.text(max_size=8),
                 st.binary(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_dumps_equals_cbor2(v) -> None:
    assert cbor.dumps(v) == cbor2.dumps(v, canonical=True)


@settings(max_examples=150, deadline=None)
@given(values)
def test_loads_cbor2_output(v) -> None:
    assert cbor.loads(cbor2.dumps(v)) == v


@settings(max_examples=100, deadline=None)
@given(values, st.integers(min_value=0, max_value=2**64 - 1))
def test_tags_round_trip(v, tag) -> None:
    data = cbor.dumps(cbor.Tag(tag, v))
    assert data == cbor2.dumps(cbor2.CBORTag(tag, v), canonical=True)
    back = cbor.loads(data)
    assert isinstance(back, cbor.Tag) and back.tag == tag and back.value == v


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_only_cbor_error(data: bytes) -> None:
    try:
        cbor.loads(data)
    except cbor.CBORError:
        pass


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_mutations_only_cbor_error(v, data) -> None:
    raw = bytearray(cbor2.dumps(v))
    i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        cbor.loads(bytes(raw))
    except cbor.CBORError:
        pass


@pytest.mark.parametrize("bad", [
    b"", b"\x18", b"\x19\x01", b"\x42a", b"\x62a", b"\x82\x01", b"\xa1\x01",
    b"\x01\x02",  # trailing bytes
    b"\x5f\x41a\xff", b"\x9f\xff", b"\xbf\xff",  # indefinite lengths
    b"\x62\xff\xfe",  # text not UTF-8
    b"\xf9\x3c\x00", b"\xfb" + bytes(8), b"\xf7", b"\xf8\x20", b"\x1c", b"\xff",
    b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",  # declared length far beyond the input
    b"\x9b\x7f\xff\xff\xff\xff\xff\xff\xff",
    b"\x81" * 9 + b"\x00",  # depth 9
    b"\xa2\x01\x01\x01\x02",  # duplicate key
    b"\xa1\x80\x01",  # list as a key
])
def test_strict_refusals(bad: bytes) -> None:
    with pytest.raises(cbor.CBORError):
        cbor.loads(bad)


def test_depth_eight_is_fine_and_non_shortest_accepted() -> None:
    assert cbor.loads(b"\x81" * 8 + b"\x00") == [[[[[[[[0]]]]]]]]
    assert cbor.loads(b"\x18\x01") == 1


def test_unencodable() -> None:
    with pytest.raises(cbor.CBORError):
        cbor.dumps(2**64)
    with pytest.raises(cbor.CBORError):
        cbor.dumps(1.5)
    assert isinstance(cbor.CBORError("x"), ValueError)
