"""The strict CBOR decoder of ``cbor`` (its docstring says what it accepts), in its own
module: loaded for a command or a manifest and dropped after, not held by an idle or
downloading agent."""

from .cbor import MAX_DEPTH, CBORError, Tag


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
