"""cc/constfold.py: device/const.py folded into the device modules at provisioning (the board
never imports ``const``; tests/test_upy_*.py run the folded agent end to end)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cc import constfold

DEVICE = Path(__file__).resolve().parent.parent / "device"
CONSTS = constfold.values(DEVICE / "const.py")


def test_values_are_const_py() -> None:
    import device.const as const

    assert CONSTS == {k: v for k, v in vars(const).items() if not k.startswith("__")}


def test_module_import_and_attributes_fold_line_numbers_kept() -> None:
    src = ("from . import cbor, const, lifecycle\n"
           "x = const.R_ID + const.COSE_ALG_EDDSA  # const.R_ID in a comment stays\n"
           "def f(m):\n"
           "    from . import const\n"
           "    return m.const, m.R_ID, 'const.R_ID', const.PROTECTED[const.KID_BYTES:]\n")
    assert constfold.fold(src, CONSTS) == (
        "from . import cbor, lifecycle\n"
        "x = 1 + (-8)  # const.R_ID in a comment stays\n"
        "def f(m):\n"
        "    pass\n"
        "    return m.const, m.R_ID, 'const.R_ID', b\"\\xa1\\x01'\"[8:]\n")


def test_names_imported_from_const_fold() -> None:
    src = "from .const import RES_KEY_UNAVAILABLE, R_ID\ny = (R_ID, obj.R_ID, RES_KEY_UNAVAILABLE)\n"
    assert constfold.fold(src, CONSTS) == "pass\ny = (1, obj.R_ID, 24)\n"


def test_modules_without_const_are_unchanged() -> None:
    src = "from micropython import const\n_X = const(1)\n"
    assert constfold.fold(src, CONSTS) == src


@pytest.mark.parametrize("src", [
    "from . import const\nx = const.NOPE\n",  # not in const.py
    "from . import const\nf(const)\n",  # the module as a value
    "from . import (cbor,\n    const)\n",  # not on a line of its own
    "from . import const as c\n",
    "from .const import NOPE\n",
])
def test_what_it_cannot_fold_is_an_error(src: str) -> None:
    with pytest.raises(ValueError):
        constfold.fold(src, CONSTS)


def test_every_device_module_folds_to_valid_python_without_const() -> None:
    folded = 0
    for path in sorted(DEVICE.glob("*.py")):
        src = path.read_text()
        out = constfold.fold(src, CONSTS, path.name)
        assert out.count("\n") == src.count("\n"), path.name
        tree = ast.parse(out)
        mods = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and (n.module == "const" or any(a.name == "const" for a in n.names if n.level))]
        assert mods == [], path.name
        folded += out != src
    assert folded >= 5  # agent, auth, keywrap, lifecycle, manifest, offer


def test_a_providers_int_constants_fold_into_its_readers_and_itself() -> None:
    coap = ("CON = 0  # confirmable\nGET = 1\nNAME = 'x'\n"
            "def encode(t=CON):\n    return t == CON, m.CON\n")
    values = constfold.module_values(coap)
    assert values == {"CON": 0, "GET": 1}  # ints only
    assert constfold.fold_module(coap, "coap", values, own=True) == (
        "pass  # confirmable\npass\nNAME = 'x'\ndef encode(t=0):\n    return t == 0, m.CON\n")
    reader = "from . import cbor, coap\nx = coap.GET, coap.encode, coap.NAME, other.coap.GET\n"
    assert constfold.fold_module(reader, "coap", values, own=False) == (
        "from . import cbor, coap\nx = 1, coap.encode, coap.NAME, other.coap.GET\n")
    assert constfold.fold_module("coap.GET\n", "coap", values, own=False) == "coap.GET\n"


@pytest.mark.parametrize("src", ["X = 1\nX = 2\n", "X = 1\ndef f(X):\n    pass\n",
                                 "X = 1\nf(X=2)\n", "X = 1\nfor X in y:\n    pass\n"])
def test_a_constant_assigned_again_or_used_as_a_name_is_an_error(src: str) -> None:
    with pytest.raises(ValueError):
        constfold.module_values(src)


def test_the_package_folds_whole() -> None:
    srcs = {p.stem: p.read_text() for p in DEVICE.glob("*.py") if p.name != "const.py"}
    out = constfold.fold_package(srcs, CONSTS)
    folded = {p: constfold.module_values(constfold.fold(srcs[p], CONSTS)) for p in constfold.PROVIDERS}
    for m, text in out.items():
        assert text.count("\n") == srcs[m].count("\n"), m
        left = [f"{n.value.id}.{n.attr}" for n in ast.walk(ast.parse(text))
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.attr in folded.get(n.value.id, ())]
        assert left == [], (m, left)
    assert "CON = 0" not in out["coap"] and "ACCEPT = 16" not in out["lifecycle"]
