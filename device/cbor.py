"""Deterministic CBOR (RFC 8949) for the device: the small subset the protocol uses.

Encodes int (to 64 bits), bytes, str, list/tuple, dict, True/False/None and ``Tag``,
deterministically: shortest heads, map keys sorted as cbor2's ``canonical=True`` does (shorter
encoded key first, then bytewise; RFC 7049 canonical, the same as RFC 8949 for the small int
keys the protocol uses). Sorting is needed anyway: MicroPython dicts do not keep key order. The decoder is strict so
that hostile input can only ever raise ``CBORError``: no floats, no indefinite lengths, no
duplicate map keys, nesting at most ``MAX_DEPTH``, lengths checked against the input before
anything is allocated, text must be UTF-8, no trailing bytes.

The decoder is its own module (``cbordecode``, ~1.6 KiB of heap on the 64-bit unix port),
loaded by the first ``loads``: most report answers carry nothing to decode, and the agent
drops it again once a command is read (``agent._report_answer``), so a download never holds it.
"""

MAX_DEPTH = 8


class CBORError(ValueError):
    pass


class Tag:
    """A tagged item (tag 18: COSE_Sign1)."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def _head(out, major, n):
    m = major << 5
    if n < 24:
        out.append(m | n)
    elif n < 0x100:
        out.append(m | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(m | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(m | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(m | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError("integer does not fit in 64 bits")


def _enc(out, v):
    if v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif v is None:
        out.append(0xF6)
    elif isinstance(v, int):
        if v >= 0:
            _head(out, 0, v)
        else:
            _head(out, 1, -1 - v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, 2, len(v))
        out.extend(v)
    elif isinstance(v, str):
        b = v.encode("utf-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(v, (list, tuple)):
        _head(out, 4, len(v))
        for x in v:
            _enc(out, x)
    elif isinstance(v, dict):
        # MicroPython dicts do not keep insertion order: sort here (canonical, as cbor2's
        # canonical=True: shorter encoded key first, then bytewise)
        _head(out, 5, len(v))
        items = []
        for k in v:
            kb = bytearray()
            _enc(kb, k)
            items.append((len(kb), bytes(kb), k))
        items.sort()
        for _, kb, k in items:
            out.extend(kb)
            _enc(out, v[k])
    elif isinstance(v, Tag):
        _head(out, 6, v.tag)
        _enc(out, v.value)
    else:
        raise CBORError("cannot encode %s" % type(v).__name__)


def dumps(obj):
    out = bytearray()
    _enc(out, obj)
    return bytes(out)


def loads(data):
    """One CBOR item from ``data`` (bytes-like), strictly (``cbordecode``); else CBORError."""
    from .cbordecode import loads

    return loads(data)
