"""Fold ``device/const.py`` into the device modules as they are compiled for a board.

``const.py`` is the device's one copy of the wire contract (tests/test_proto_device_agree.py).
Imported on a board it costs ~4.7 KiB of heap for as long as the agent runs (a module dict of
~95 entries, their ~95 interned names, its code) and every ``const.R_ID`` in the code is a
global load plus an attribute load. mpy-cross folds ``micropython.const`` only within a
module, so provisioning does it across modules: each ``const.NAME`` (and each name imported
with ``from .const import NAME``) becomes its literal value, the import of ``const`` goes,
and ``const.py`` itself is not put on the board. Line numbers are kept (tracebacks still point
at the source). On CPython the package imports ``const`` as any module.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

MODULE = "const"


def values(const_py: Path) -> dict[str, int | str | bytes]:
    """NAME -> literal for every top-level ``NAME = <int, str or bytes literal>``."""
    out: dict[str, int | str | bytes] = {}
    for node in ast.parse(const_py.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            v = ast.literal_eval(node.value)
            if not isinstance(v, (int, str, bytes)) or isinstance(v, bool):
                raise ValueError(f"{const_py}: {node.targets[0].id} is not an int, str or bytes")
            out[node.targets[0].id] = v
    return out


def _literal(v: int | str | bytes) -> str:
    return f"({v!r})" if isinstance(v, int) and v < 0 else repr(v)


def _apply(lines: list[str], edits: list[tuple[int, int, int, str]]) -> str:
    """``lines`` (each with its end) with each (row, col start, col end, text) put in."""
    for row, c0, c1, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:c0] + text + line[c1:]
    return "".join(lines)


def fold(source: str, consts: dict[str, int | str | bytes], name: str = "<module>") -> str:
    """``source`` with ``const`` folded in (unchanged if it does not import ``const``).

    Recognised imports, at any indentation, each on a line of its own: ``from . import a,
    const, b`` (``const`` leaves the list; the line becomes ``pass`` if it was alone) and
    ``from .const import X, Y`` (the line becomes ``pass``; the bare names X, Y are folded).
    Anything else that names the module (``import``-ed under another name, ``const`` passed
    around as a value, an unknown ``const.NAME``) is an error, so nothing is silently missed.
    """
    toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (row, col start, col end, text)
    bare: set[str] = set()
    imports_module = False

    def sig(i: int) -> tokenize.TokenInfo | None:
        return toks[i] if 0 <= i < len(toks) else None

    for i, t in enumerate(toks):
        if t.type != tokenize.NAME or t.string != "from":
            continue
        row = t.start[0]
        stmt = []
        for x in toks[i:]:
            if x.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                break
            if x.type not in (tokenize.NL, tokenize.COMMENT):
                stmt.append(x)
        words = [x.string for x in stmt]
        if MODULE in words and stmt[-1].end[0] != row:
            raise ValueError(f"{name}:{row}: import const on a line of its own")
        if words[:3] == ["from", ".", "import"] and MODULE in words[3:]:
            names = [w for w in words[3:] if w != ","]
            if "(" in names or "as" in names:
                raise ValueError(f"{name}:{row}: import const on a line of its own, without 'as'")
            imports_module = True
            rest = [n for n in names if n != MODULE]
            text = ("from . import " + ", ".join(rest)) if rest else "pass"
            edits.append((row, stmt[0].start[1], stmt[-1].end[1], text))
        elif words[:4] == ["from", ".", MODULE, "import"]:
            names = [w for w in words[4:] if w != ","]
            unknown = [n for n in names if n not in consts]
            if unknown or not names:
                raise ValueError(f"{name}:{row}: not in const.py: {', '.join(unknown) or '*'}")
            bare.update(names)
            edits.append((row, stmt[0].start[1], stmt[-1].end[1], "pass"))
    import_rows = {e[0] for e in edits}
    for i, t in enumerate(toks):
        if t.type != tokenize.NAME or t.start[0] in import_rows:
            continue
        prev = sig(i - 1)
        after_dot = prev is not None and prev.string == "."
        if imports_module and t.string == MODULE and not after_dot:
            dot, attr = sig(i + 1), sig(i + 2)
            if dot is None or dot.string != "." or attr is None or attr.type != tokenize.NAME:
                raise ValueError(f"{name}:{t.start[0]}: const used other than as const.NAME")
            if attr.string not in consts:
                raise ValueError(f"{name}:{t.start[0]}: const.{attr.string} is not in const.py")
            edits.append((t.start[0], t.start[1], attr.end[1], _literal(consts[attr.string])))
        elif t.string in bare and not after_dot:
            nxt = sig(i + 1)
            if nxt is not None and nxt.string == "=" and t.start[1] == 0:
                raise ValueError(f"{name}:{t.start[0]}: {t.string} imported from const, then assigned")
            edits.append((t.start[0], t.start[1], t.end[1], _literal(consts[t.string])))
    return _apply(lines, edits)


# Modules whose int constants (top-level ``NAME = <int>``, upper case, assigned once) are folded
# into the modules that read them as ``module.NAME`` and into the module itself, whose
# assignments then go: on a board such a name holds a dict entry and an interned name for
# nothing (coap's option numbers and message types, lifecycle's states and events). The module
# still loads (its functions and tables); on CPython nothing changes.
PROVIDERS = ("coap", "lifecycle")


def module_values(source: str, name: str = "<module>") -> dict[str, int]:
    """NAME -> int of a provider's foldable constants."""
    tree = ast.parse(source)
    out: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper() \
                and node.lineno == node.end_lineno:
            try:
                v = ast.literal_eval(node.value)
            except ValueError:
                continue
            if type(v) is int:
                out[node.targets[0].id] = v
    stores = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
              and not isinstance(n.ctx, ast.Load)]
    args = [a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
            for a in n.args + n.kwonlyargs] + \
        [k.arg for k in ast.walk(tree) if isinstance(k, ast.keyword)]
    for k in list(out):
        if stores.count(k) != 1 or k in args:
            raise ValueError(f"{name}: {k} is assigned or passed by name: not foldable")
    return out


def fold_module(source: str, module: str, values: dict[str, int], *, own: bool,
                name: str = "<module>") -> str:
    """``source`` with provider ``module``'s ``values`` folded in: ``module.NAME`` where the
    source imports it (``from . import ..., module``), or, ``own``, every bare NAME and the
    lines that assign them (each becomes ``pass``: line numbers are kept)."""
    if not values:
        return source
    toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []
    if own:
        top = {node.lineno for node in ast.parse(source).body if isinstance(node, ast.Assign)
               and isinstance(node.targets[0], ast.Name) and node.targets[0].id in values}
        for row in top:
            line = lines[row - 1]
            code = line.split("#", 1)[0].rstrip()
            edits.append((row, 0, len(code), "pass"))
    else:
        imported = any(t.string == "from" and [x.string for x in toks[i:i + 3]] == ["from", ".", "import"]
                       and any(x.string == module and x.start[0] == t.start[0] for x in toks[i + 3:i + 40])
                       for i, t in enumerate(toks))
        if not imported:
            return source
        top = set()
    for i, t in enumerate(toks):
        if t.type != tokenize.NAME or t.start[0] in top:
            continue
        if i and toks[i - 1].string == ".":
            continue
        if own and t.string in values:
            edits.append((t.start[0], t.start[1], t.end[1], _literal(values[t.string])))
        elif not own and t.string == module and i + 2 < len(toks) and toks[i + 1].string == "." \
                and toks[i + 2].string in values:
            a = toks[i + 2]
            edits.append((t.start[0], t.start[1], a.end[1], _literal(values[a.string])))
    return _apply(lines, edits)


def fold_package(sources: dict[str, str], consts: dict[str, int | str | bytes]) -> dict[str, str]:
    """Module name -> source as compiled for a board: const.py folded everywhere, then each
    provider's int constants (``PROVIDERS``). ``sources`` has no ``const``."""
    out = {m: fold(src, consts, m + ".py") for m, src in sources.items()}
    for p in PROVIDERS:
        if p not in out:
            continue
        values = module_values(out[p], p + ".py")
        out = {m: fold_module(src, p, values, own=m == p, name=m + ".py") for m, src in out.items()}
    return out
