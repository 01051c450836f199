"""Block1 reception limits (unit level: an 8 MiB upload over the air would take too long)."""

from __future__ import annotations

import hashlib

import pytest
from aiocoap.optiontypes import BlockOption

from gateway.blobs import BlobStore
from gateway.uploads import Block1Receiver, FileSink, Incomplete, MemorySink, TooLarge


def b1(num: int, more: bool, szx: int = 2) -> BlockOption.BlockwiseTuple:
    return BlockOption.BlockwiseTuple(num, more, szx)


def test_file_upload_streams_verifies_and_respects_the_limit(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 2  # 512 bytes = 8 blocks of 64
    name = hashlib.sha256(data).hexdigest()
    rx = Block1Receiver()
    sink = None
    for n in range(8):
        sink = rx.feed(("c",), b1(n, n < 7), data[n * 64:(n + 1) * 64],
                       lambda: FileSink(blobs, name, 4096))
        assert (sink is None) == (n < 7)
    assert sink.hash.hexdigest() == name
    sink.commit()
    assert (tmp_path / "blobs" / name).read_bytes() == data
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []

    rx.feed(("c",), b1(0, True), data[:64], lambda: FileSink(blobs, name, 100))
    with pytest.raises(TooLarge):
        rx.feed(("c",), b1(1, True), data[64:128], lambda: FileSink(blobs, name, 100))
    assert rx.transfers == {} and list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_gaps_unknown_transfers_and_restarts():
    rx = Block1Receiver()
    with pytest.raises(Incomplete):  # block 3 of a transfer never started
        rx.feed(("k",), b1(3, True), b"x" * 64, lambda: MemorySink(1000))
    rx.feed(("k",), b1(0, True), b"a" * 64, lambda: MemorySink(1000))
    rx.feed(("k",), b1(0, True), b"b" * 64, lambda: MemorySink(1000))  # restart at 0
    with pytest.raises(Incomplete):  # a short non-final block
        rx.feed(("k",), b1(1, True), b"c" * 10, lambda: MemorySink(1000))
    rx.feed(("k",), b1(0, True), b"d" * 64, lambda: MemorySink(1000))
    with pytest.raises(Incomplete):  # a gap
        rx.feed(("k",), b1(2, False), b"e", lambda: MemorySink(1000))
    rx.feed(("k",), b1(0, True), b"f" * 64, lambda: MemorySink(1000))
    done = rx.feed(("k",), b1(1, False), b"g", lambda: MemorySink(1000))
    assert bytes(done.buf) == b"f" * 64 + b"g"
    rx.feed(("k",), b1(0, True), b"h" * 64, lambda: MemorySink(1000))
    rx.expire(now=1e12)
    assert rx.transfers == {}


def test_a_repeated_block_is_acknowledged_not_written_twice():
    """A lost 2.31 makes the client send the same block again: no restart, no duplicate bytes."""
    rx = Block1Receiver()
    rx.feed(("k",), b1(0, True), b"a" * 64, lambda: MemorySink(1000))
    rx.feed(("k",), b1(1, True), b"b" * 64, lambda: MemorySink(1000))
    assert rx.feed(("k",), b1(1, True), b"b" * 64, lambda: MemorySink(1000)) is None
    rx.feed(("k",), b1(2, True), b"c" * 64, lambda: MemorySink(1000))
    with pytest.raises(Incomplete):  # an older block than the last one is still a gap
        rx.feed(("k",), b1(1, True), b"b" * 64, lambda: MemorySink(1000))
    rx.feed(("k",), b1(0, True), b"a" * 64, lambda: MemorySink(1000))
    rx.feed(("k",), b1(1, True), b"b" * 64, lambda: MemorySink(1000))
    rx.feed(("k",), b1(1, True), b"b" * 64, lambda: MemorySink(1000))
    done = rx.feed(("k",), b1(2, False), b"c", lambda: MemorySink(1000))
    assert bytes(done.buf) == b"a" * 64 + b"b" * 64 + b"c"
