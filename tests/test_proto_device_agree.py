"""device/const.py is a copy of proto for MicroPython: every value must equal proto's."""

from __future__ import annotations

import device.const as const
from proto import control, manifest, uris
from proto.codes import Cap, Compression, Op, Phase, Result, State
from proto.keys import MANIFEST_VERSION, CmdKey, ManifestKey, ReportKey

ENUMS = [(ReportKey, "R_"), (CmdKey, "C_"), (ManifestKey, "M_"), (State, "ST_"),
         (Result, "RES_"), (Op, "OP_"), (Phase, "PH_"),
         (Compression, "COMP_"), (Cap, "CAP_")]


def test_every_enum_member_is_copied_with_its_value() -> None:
    for enum, prefix in ENUMS:
        for member in enum:
            name = prefix + member.name
            assert hasattr(const, name), f"device/const.py lacks {name}"
            assert getattr(const, name) == member.value, name


def test_no_stale_prefixed_names() -> None:
    expected = {prefix + m.name for enum, prefix in ENUMS for m in enum}
    for name in dir(const):
        for _, prefix in ENUMS:
            if name.startswith(prefix):
                assert name in expected, f"device/const.py has {name}, proto does not"


def test_plain_constants() -> None:
    assert const.MANIFEST_VERSION == MANIFEST_VERSION
    for name in ("REPORT", "COMMAND", "FIRMWARE", "ETAG_BYTES", "IMAGE_ID_HEX",
                 "DEFAULT_DEVICE_PORT"):
        assert getattr(const, name) == getattr(uris, name), name
    for name in ("COSE_SIGN1_TAG", "COSE_ALG_EDDSA", "COSE_HDR_ALG", "COSE_HDR_KID",
                 "PROTECTED", "KID_BYTES", "MAX_MANIFEST"):
        assert getattr(const, name) == getattr(manifest, name), name
    assert const.MAX_REPORT == control.MAX_REPORT
