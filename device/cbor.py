"""Deterministic CBOR (RFC 8949) for the device: the small subset the protocol uses.

Encodes int (to 64 bits), bytes, str, list/tuple, dict, True/False/None and ``Tag``,
deterministically: shortest heads, map keys sorted as cbor2's ``canonical=True`` does (shorter
encoded key first, then bytewise; RFC 7049 canonical, the same as RFC 8949 for the small int
keys the protocol uses). Sorting is needed anyway: MicroPython dicts do not keep key order. The decoder is strict so
that hostile input can only ever raise ``CBORError``: no floats, no indefinite lengths, no
duplicate map keys, nesting at most ``MAX_DEPTH``, lengths checked against the input before
anything is allocated, text must be UTF-8, no trailing bytes.
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


def _dec(d, i, depth):
    # returns (value, next index)
    n = len(d)
    if i >= n:
        raise CBORError("truncated")
    ib = d[i]
    major = ib >> 5
    ai = ib & 31
    i += 1
    if major == 7:
        if ai == 20:
            return False, i
        if ai == 21:
            return True, i
        if ai == 22:
            return None, i
        raise CBORError("unsupported simple value or float")
    if ai < 24:
        val = ai
    elif ai < 28:
        size = 1 << (ai - 24)
        if i + size > n:
            raise CBORError("truncated")
        val = int.from_bytes(bytes(d[i:i + size]), "big")
        i += size
    else:
        raise CBORError("indefinite length or reserved head")
    if major == 0:
        return val, i
    if major == 1:
        return -1 - val, i
    if major == 2 or major == 3:
        if val > n - i:
            raise CBORError("string longer than the input")
        b = bytes(d[i:i + val])
        i += val
        if major == 2:
            return b, i
        try:
            return b.decode("utf-8"), i
        except MemoryError:
            raise  # out of RAM is no verdict on the text
        except Exception:
            raise CBORError("text is not UTF-8")
    if depth >= MAX_DEPTH:
        raise CBORError("nested too deeply")
    if major == 4:
        if val > n - i:
            raise CBORError("array longer than the input")
        lst = []
        for _ in range(val):
            x, i = _dec(d, i, depth + 1)
            lst.append(x)
        return lst, i
    if major == 5:
        if val > (n - i) // 2:
            raise CBORError("map longer than the input")
        m = {}
        for _ in range(val):
            k, i = _dec(d, i, depth + 1)
            if not isinstance(k, (int, str, bytes)) and k is not None:
                raise CBORError("unsupported map key type")
            if k in m:
                raise CBORError("duplicate map key")
            x, i = _dec(d, i, depth + 1)
            m[k] = x
        return m, i
    # major 6: tag
    x, i = _dec(d, i, depth + 1)
    return Tag(val, x), i


def loads(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("CBOR input must be bytes")
    try:
        v, i = _dec(data, 0, 0)
    except (CBORError, MemoryError):  # out of RAM is not bad input: the agent reports it as such
        raise
    except Exception as e:  # RecursionError, IndexError...: never let them out as anything else
        raise CBORError("cannot decode: %r" % (e,))
    if i != len(data):
        raise CBORError("trailing bytes")
    return v
