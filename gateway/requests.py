"""Requests from devices and operators, parsed and checked before the fleet acts on them:
the report a device sends (``parse_report``), ids, tags and the device listing's options. A
request the gateway will not carry out raises ``Refused`` with a one-line reason."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, NamedTuple

import cbor2

from proto.codes import State, state_name
from proto.keys import ReportKey

from .cborcheck import Unacceptable, check_plain

MAX_ID = 64
MAX_TAGS = 32
UINT_MAX = 2**63 - 1  # a signed 64-bit integer in both store engines
DEVICES_PAGE = 1000  # devices in one GET dev answer at most (offset= for the next page)


class Refused(Exception):
    """A request the gateway will not carry out; ``kind`` picks the CoAP code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # bad_request | not_found | forbidden | conflict


class Report(NamedTuple):
    """What a device reports (``report_of``). A named tuple: made once per report, and a
    frozen dataclass's ``__init__`` (a setattr a field) cost three times as much."""

    id: str
    cls: str
    seq: int
    state: int
    result: int
    progress: int | None
    job: int | None
    size: int | None
    target: int | None
    phase: int | None = None
    caps: int | None = None  # proto.codes.Cap: what it can decode (absent: full images only)


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise Refused("bad_request", f"{what} must be a text string of 1-{MAX_ID} characters")
    if not value.isprintable() or "/" in value or value.strip() != value:
        raise Refused("bad_request", f"{what} must be printable, without '/' or edge spaces")
    return value


def check_uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT_MAX:
        raise Refused("bad_request", f"{what} must be an unsigned integer")
    return value


def loads_exact(payload: bytes, what: str) -> Any:
    """One CBOR item and nothing after it (cbor2.loads ignores trailing bytes)."""
    fp = io.BytesIO(payload)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    except Exception as e:  # cbor2 raises several types for malformed input
        raise Refused("bad_request", f"{what} is not CBOR: {type(e).__name__}") from None
    if fp.read(1):
        raise Refused("bad_request", f"{what} has bytes after its CBOR item")
    try:
        check_plain(obj)
    except Unacceptable as e:
        raise Refused("bad_request", f"{what}: {e}") from None
    return obj


def parse_report(payload: bytes) -> Report:
    """Decode and type-check a report payload (CBOR map with ``ReportKey`` ints)."""
    return report_of(loads_exact(payload, "report"))


def report_of(m: Any) -> Report:
    """Type-check a decoded report (``loads_exact``'s result)."""
    if not isinstance(m, Mapping):
        raise Refused("bad_request", "report must be a CBOR map")
    for k in (ReportKey.ID, ReportKey.CLASS, ReportKey.SEQ, ReportKey.STATE, ReportKey.RESULT):
        if int(k) not in m:
            raise Refused("bad_request", f"report lacks {k.name.lower()} (key {int(k)})")
    state = check_uint(m[ReportKey.STATE], "state")
    if state not in State._value2member_map_:
        raise Refused("bad_request", f"unknown state {state}")

    def opt(k: ReportKey) -> int | None:
        v = m.get(int(k))
        return None if v is None else check_uint(v, k.name.lower())

    return Report(
        id=check_id(m[ReportKey.ID], "id"),
        cls=check_id(m[ReportKey.CLASS], "class"),
        seq=check_uint(m[ReportKey.SEQ], "seq"),
        state=state,
        result=check_uint(m[ReportKey.RESULT], "result"),
        progress=opt(ReportKey.PROGRESS),
        job=opt(ReportKey.JOB),
        size=opt(ReportKey.SIZE),
        target=opt(ReportKey.TARGET),
        phase=opt(ReportKey.PHASE),
        caps=opt(ReportKey.CAPS),
    )


def device_query(query: tuple[str, ...]) -> tuple[dict[str, Any], bool, int, int]:
    """(filters, summary, offset, limit) from ``GET dev`` query options."""
    f: dict[str, Any] = {}
    summary, offset, limit = False, 0, DEVICES_PAGE
    for q in query:
        k, _, v = q.partition("=")
        if k == "summary":
            summary = True
        elif k == "state":
            states = {state_name(s): int(s) for s in State}
            if v not in states:
                raise Refused("bad_request", f"state must be one of {', '.join(states)}")
            f["state"] = states[v]
        elif k in ("class", "tag"):
            f[k] = check_id(v, k)
        elif k in ("campaign", "offset", "limit"):
            if not v.isdigit() or len(v) > 18:
                raise Refused("bad_request", f"{k} must be an unsigned integer")
            if k == "campaign":
                f[k] = int(v)
            elif k == "offset":
                offset = int(v)
            else:
                limit = min(int(v), DEVICES_PAGE)
        else:
            raise Refused("bad_request", f"unknown option {k!r} (state, class, tag, campaign, "
                          "offset, limit, summary)")
    return f, summary, offset, limit


def check_tags(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise Refused("bad_request", f"{what} must be a list of at most {MAX_TAGS} tags")
    return [check_id(t, "tag") for t in value]
