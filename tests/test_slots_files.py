"""FileSlots (slot files + boot.json) and the atomic state store, on a real file system."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from device.slots import FileSlots, SlotError
from device.state import Store, atomic_write


def write_image(slots: FileSlots, image: bytes) -> None:
    slots.open(len(image), 0)
    for i in range(0, len(image), 1000):
        slots.write(image[i:i + 1000])
    slots.sync()


def test_stream_install_boot_confirm(tmp_path: Path) -> None:
    slots = FileSlots(str(tmp_path / "s"))
    assert slots.boot() == "a" and slots.inactive() == "b"
    image = os.urandom(10_000)
    write_image(slots, image)
    assert Path(slots.path("b")).read_bytes() == image
    slots.set_pending()
    assert (slots.running(), slots.next_boot()) == ("a", "b")
    # a fresh object (power cycle) plays the bootloader
    slots = FileSlots(str(tmp_path / "s"))
    assert slots.boot() == "b"
    slots.confirm()
    slots = FileSlots(str(tmp_path / "s"))
    assert slots.boot() == "b" and slots.inactive() == "a"


def test_unconfirmed_image_rolls_back_on_the_second_boot(tmp_path: Path) -> None:
    slots = FileSlots(str(tmp_path / "s"))
    slots.boot()
    write_image(slots, b"new")
    slots.set_pending()
    assert FileSlots(str(tmp_path / "s")).boot() == "b"  # on trial
    assert FileSlots(str(tmp_path / "s")).boot() == "a"  # never confirmed: back
    assert FileSlots(str(tmp_path / "s")).boot() == "a"


def test_agent_rollback_boots_the_previous_slot(tmp_path: Path) -> None:
    slots = FileSlots(str(tmp_path / "s"))
    slots.boot()
    write_image(slots, b"new")
    slots.set_pending()
    slots = FileSlots(str(tmp_path / "s"))
    assert slots.boot() == "b"
    slots.rollback()
    assert slots.next_boot() == "a"
    assert FileSlots(str(tmp_path / "s")).boot() == "a"


def test_resume_writes_from_an_offset_without_truncating(tmp_path: Path) -> None:
    slots = FileSlots(str(tmp_path / "s"))
    slots.boot()
    image = os.urandom(5000)
    slots.open(len(image), 0)
    slots.write(image[:3000])
    slots.sync()
    slots.close()
    slots = FileSlots(str(tmp_path / "s"))
    slots.boot()
    slots.open(len(image), 2048)
    slots.write(image[2048:])
    slots.sync()
    buf = bytearray(6000)
    assert slots.readinto(0, buf) == 5000 and bytes(buf[:5000]) == image


def test_capacity(tmp_path: Path) -> None:
    slots = FileSlots(str(tmp_path / "s"), capacity=1000)
    with pytest.raises(SlotError):
        slots.open(1001, 0)


def test_store_is_replaced_atomically_and_survives_a_torn_fat_rename(tmp_path: Path) -> None:
    p = str(tmp_path / "state.json")
    st = Store(p)
    assert st.load() == {}
    st.save({"seq": 1})
    st.save({"seq": 2})
    assert st.load() == {"seq": 2} and st.writes == 2
    assert not os.path.exists(p + ".tmp")
    # FAT fallback torn between remove and rename: only the complete temp file is left
    atomic_write(p + ".tmp", json.dumps({"seq": 3}).encode())
    os.rename(p + ".tmp", p + ".tmp2")
    os.remove(p)
    os.rename(p + ".tmp2", p + ".tmp")
    assert Store(p).load() == {"seq": 3}
    # a torn temp file next to a good state file is ignored
    Path(p).write_text(json.dumps({"seq": 4}))
    Path(p + ".tmp").write_text('{"seq": ')
    assert Store(p).load() == {"seq": 4}
