"""Esp32Partitions against an in-memory esp32.Partition that enforces the real rules.

The fake (below) refuses what real NOR flash would corrupt: a write over bytes not erased, an
erase or a full-block write that is not whole 4096-byte sectors. Its ``reset()`` models the
ESP-IDF bootloader with rollback enabled: a new image boots once on trial; a reset without a
confirm boots the previous one again.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from device.esp32slots import Esp32Partitions
from device.slots import SlotError

SECTOR = 4096


class Flash:
    """Two OTA slots (``ota_0``, ``ota_1``) and the otadata the bootloader reads."""

    def __init__(self, slot_size: int = 256 * 1024) -> None:
        self.slots = {"ota_0": bytearray(b"\xff" * slot_size), "ota_1": bytearray(b"\xff" * slot_size)}
        self.running = "ota_0"
        self.boot = "ota_0"  # what boots at the next reset
        self.pending_verify = False  # the running image is on trial
        self.erases = 0
        self.writes = 0

    def reset(self) -> str:
        """Power cycle: the bootloader picks the image."""
        if self.pending_verify:
            self.pending_verify = False  # on trial, never confirmed: back to the previous one
            self.boot = "ota_1" if self.running == "ota_0" else "ota_0"
        elif self.boot != self.running:
            self.pending_verify = True
        self.running = self.boot
        return self.running

    def partition_class(self) -> type:
        flash = self

        class Partition:
            BOOT = 0
            RUNNING = 1

            def __init__(self, which: int | str) -> None:
                if which == Partition.RUNNING:
                    self.label = flash.running
                elif which == Partition.BOOT:
                    self.label = flash.boot
                else:
                    assert which in flash.slots, which
                    self.label = which

            @property
            def _mem(self) -> bytearray:
                return flash.slots[self.label]

            def info(self) -> tuple:
                return (0, 0x10 + int(self.label[-1]), 0x10000, len(self._mem), self.label, False)

            def get_next_update(self) -> "Partition":
                return Partition("ota_1" if self.label == "ota_0" else "ota_0")

            def ioctl(self, op: int, arg: int) -> int | None:
                if op == 4:
                    return len(self._mem) // SECTOR
                if op == 5:
                    return SECTOR
                if op == 6:
                    assert 0 <= arg < len(self._mem) // SECTOR, "erase past the end"
                    self._mem[arg * SECTOR:(arg + 1) * SECTOR] = b"\xff" * SECTOR
                    flash.erases += 1
                    return 0
                raise AssertionError(f"unexpected ioctl {op}")

            def readblocks(self, block: int, buf, offset: int = 0) -> None:  # type: ignore[no-untyped-def]
                start = block * SECTOR + offset
                assert start + len(buf) <= len(self._mem), "read past the end"
                buf[:] = self._mem[start:start + len(buf)]

            def writeblocks(self, block: int, buf, offset: int | None = None) -> None:  # type: ignore[no-untyped-def]
                if offset is None:
                    assert len(buf) % SECTOR == 0, "a full-block write must be whole sectors"
                    for b in range(block, block + len(buf) // SECTOR):
                        self.ioctl(6, b)
                    offset = 0
                start = block * SECTOR + offset
                assert start + len(buf) <= len(self._mem), "write past the end"
                old = self._mem[start:start + len(buf)]
                assert old == b"\xff" * len(buf), f"write over unerased flash at {start}"
                self._mem[start:start + len(buf)] = bytes(buf)
                flash.writes += 1

            def set_boot(self) -> None:
                flash.boot = self.label

            @staticmethod
            def mark_app_valid_cancel_rollback() -> None:
                flash.pending_verify = False
                flash.boot = flash.running

        return Partition


def stream(slots: Esp32Partitions, image: bytes, chunk: int, start: int = 0) -> None:
    slots.open(len(image), start)
    for i in range(start, len(image), chunk):
        slots.write(image[i:i + chunk])
    slots.sync()


def read_back(slots: Esp32Partitions, n: int) -> bytes:
    out = bytearray()
    buf = bytearray(1000)  # deliberately not a divisor of the sector size
    while len(out) < n:
        got = slots.readinto(len(out), memoryview(buf)[:min(len(buf), n - len(out))])
        out += buf[:got]
    return bytes(out)


def test_fake_refuses_writes_over_unerased_flash() -> None:
    flash = Flash()
    p = flash.partition_class()("ota_1")
    p.writeblocks(0, b"\x00" * SECTOR, 0)
    with pytest.raises(AssertionError, match="unerased"):
        p.writeblocks(0, b"\x01" * SECTOR, 0)
    with pytest.raises(AssertionError, match="whole sectors"):
        p.writeblocks(1, b"\x01" * 100)


@pytest.mark.parametrize("chunk", [64, 1024, 1500])
def test_stream_into_the_next_slot_in_whole_sectors(chunk: int) -> None:
    flash = Flash()
    slots = Esp32Partitions(flash.partition_class())
    image = os.urandom(50_000)  # not a multiple of the sector size
    assert slots.running() == "ota_0" and slots.inactive() == "ota_1"
    stream(slots, image, chunk)
    assert bytes(flash.slots["ota_1"][:len(image)]) == image
    assert flash.slots["ota_0"] == b"\xff" * len(flash.slots["ota_0"])  # running slot untouched
    assert flash.erases == -(-len(image) // SECTOR)  # each sector erased once
    assert read_back(slots, len(image)) == image


def test_sync_inside_a_sector_then_resume_rewrites_it_whole() -> None:
    flash = Flash()
    slots = Esp32Partitions(flash.partition_class())
    image = os.urandom(3 * SECTOR + 100)
    slots.open(len(image), 0)
    slots.write(image[:5000])
    slots.sync()  # the partial sector 1 goes to flash padded
    # power cut: a new object resumes at the synced offset, inside sector 1
    slots = Esp32Partitions(flash.partition_class())
    stream(slots, image, 1024, start=5000)
    assert read_back(slots, len(image)) == image
    assert hashlib.sha256(bytes(flash.slots["ota_1"][:len(image)])).digest() == hashlib.sha256(image).digest()


def test_image_larger_than_the_partition_is_refused() -> None:
    slots = Esp32Partitions(Flash(slot_size=64 * 1024).partition_class())
    with pytest.raises(SlotError):
        slots.open(64 * 1024 + 1, 0)


def test_boot_confirm_and_bootloader_rollback() -> None:
    flash = Flash()
    slots = Esp32Partitions(flash.partition_class())
    stream(slots, b"new" * 1000, 512)
    slots.set_pending()
    assert slots.next_boot() == "ota_1" and slots.running() == "ota_0"
    flash.reset()
    assert slots.running() == "ota_1"
    slots.confirm()
    flash.reset()
    assert slots.running() == "ota_1"  # confirmed: stays
    # the next update goes to ota_0, boots on trial, is never confirmed: rollback
    stream(slots, b"newer" * 1000, 512)
    slots.set_pending()
    flash.reset()
    assert slots.running() == "ota_0"
    flash.reset()
    assert slots.running() == "ota_1"


def test_rollback_by_the_agent_boots_the_previous_image() -> None:
    flash = Flash()
    slots = Esp32Partitions(flash.partition_class())
    stream(slots, b"x" * 5000, 1024)
    slots.set_pending()
    flash.reset()
    assert slots.running() == "ota_1"
    slots.rollback()  # the self-test failed
    assert slots.next_boot() == "ota_0"
    flash.reset()
    assert slots.running() == "ota_0"
