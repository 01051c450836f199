"""Small CoAP helpers shared by the device and control APIs."""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import cbor2
import psycopg
from aiocoap import Message
from aiocoap.numbers.codes import Code

from .requests import Refused
from .storage import StoreUnavailable

log = logging.getLogger("fota.gateway")

CBOR_FORMAT = 60  # application/cbor
RETRY_AFTER = 60  # Max-Age on 5.03: seconds before a client should try again

REFUSED_CODES = {
    "bad_request": Code.BAD_REQUEST,
    "not_found": Code.NOT_FOUND,
    "forbidden": Code.FORBIDDEN,
    "conflict": Code.CONFLICT,
    "unauthorized": Code.UNAUTHORIZED,
}


def error(code: Code, text: str, **opts: Any) -> Message:
    """An error response with a one-line diagnostic payload (RFC 7252 section 5.5.2)."""
    return Message(code=code, payload=text.splitlines()[0].encode()[:200] if text else b"", **opts)


def cbor_response(code: Code, obj: Any, **opts: Any) -> Message:
    if obj is None:
        return Message(code=code, **opts)
    return Message(code=code, payload=cbor2.dumps(obj), content_format=CBOR_FORMAT, **opts)


def refusal(e: Refused) -> Message:
    return error(REFUSED_CODES[e.kind], str(e))


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return isinstance(e, sqlite3.OperationalError) and "full" in str(e)


def shortage(e: BaseException) -> str | None:
    """'disk full' or 'out of file descriptors' (or memory) when ``e`` says so, else None."""
    if is_disk_full(e):
        return "disk full"
    if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM,
                                              errno.ENOBUFS):
        return "out of file descriptors" if e.errno in (errno.EMFILE, errno.ENFILE) else \
            "out of memory"
    if isinstance(e, MemoryError) or (isinstance(e, sqlite3.OperationalError)
                                      and "unable to open" in str(e)):
        return "out of memory" if isinstance(e, MemoryError) else "out of file descriptors"
    if isinstance(e, (StoreUnavailable, sqlite3.OperationalError, psycopg.OperationalError)):
        return "store unavailable"  # locked, gone, restarting: nothing of the request is kept
    return None


_last_logged: dict[str, float] = {}
LOG_SHORTAGE_EVERY = 60.0  # seconds between log lines about one kind of shortage


def short_of(what: str, e: BaseException, now: float | None = None) -> Message:
    """5.03 with Max-Age for a resource shortage; one log line per kind per minute."""
    now = time.monotonic() if now is None else now
    if now - _last_logged.get(what, -LOG_SHORTAGE_EVERY) >= LOG_SHORTAGE_EVERY:
        _last_logged[what] = now
        log.error("%s: %s (answering 5.03 until it passes)", what, e)
    return unavailable(f"{what}; try again later")


def unavailable(text: str) -> Message:
    return error(Code.SERVICE_UNAVAILABLE, text, max_age=RETRY_AFTER)


def address_of(remote: Any) -> str:
    """'ip:port' / '[ip]:port' of a UDP remote, v4-mapped addresses shown as IPv4."""
    remote = getattr(remote, "underlying_address", remote)  # OSCORE: the UDP address below
    host, port = remote.sockaddr[0], remote.sockaddr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def answer(handle: Callable[[], Message], what: str) -> Message:
    """Run a request handler so that input never crashes the gateway: a refusal becomes its
    4.xx, a full disk or no free file descriptor 5.03 with Max-Age (nothing stored is lost),
    anything else 5.00, logged."""
    try:
        return handle()
    except Exception as e:
        return failure(e, what)


def failure(e: Exception, what: str) -> Message:
    """The answer to a request whose handler raised ``e`` (see ``answer``)."""
    if isinstance(e, Refused):
        return refusal(e)
    short = shortage(e)
    if short is not None:
        return short_of(short, e)
    now = time.monotonic()  # a bug: its traceback once a minute, not once per datagram
    if now - _last_logged.get(what, -LOG_SHORTAGE_EVERY) >= LOG_SHORTAGE_EVERY:
        _last_logged[what] = now
        log.error("%s request failed (more are not logged for a minute): %s", what, e,
                  exc_info=e)
    return error(Code.INTERNAL_SERVER_ERROR, "internal error")
