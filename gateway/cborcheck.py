"""What a decoded request body may contain: plain data, shallow, finite.

cbor2 (6.x) already refuses nesting deeper than 400 and declared lengths past the end of the
input, and every body is size-capped before it is decoded (``proto.control``: MAX_REPORT,
MAX_BODY). What cbor2 still builds is its semantic tags: dates, regular expressions (compiled!),
decimals, sets, and shared references that make a list contain itself. No message of the
protocol uses any of those, so this walks the decoded value once and refuses anything but
int, float, text, bytes, bool, null, arrays and maps with int or text keys, nested at most
``MAX_DEPTH`` deep and ``MAX_ITEMS`` items in all. The depth bound also ends a cycle.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 16  # the deepest protocol body is 3 (a device listing inside a response is ours)
MAX_ITEMS = 4096  # no body of MAX_BODY bytes holds more items than bytes
_SCALARS = (int, float, str, bytes, bool, type(None))


class Unacceptable(ValueError):
    """A decoded CBOR value the gateway will not look at; the message says why."""


def check_plain(obj: Any, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """Raise ``Unacceptable`` unless ``obj`` is plain, shallow, acyclic data."""
    count = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > max_items:
            raise Unacceptable(f"more than {max_items} items")
        if isinstance(value, _SCALARS):
            continue
        if depth >= max_depth:
            raise Unacceptable(f"nested deeper than {max_depth}")
        if isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, (int, str)) or isinstance(k, bool):
                    raise Unacceptable("map keys must be integers or text")
                stack.append((v, depth + 1))
        else:
            raise Unacceptable(f"unsupported CBOR item ({type(value).__name__})")
