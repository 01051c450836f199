"""The control API client (proto/control.py): CBOR over CoAP, short timeouts, one-line errors.

aiocoap's defaults retransmit a CON request for about 93 s before giving up; an operator at a
terminal should learn within seconds that the gateway is not there, so every request is bounded
by ``timeout`` and a refused or silent gateway becomes a ``CcError``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiocoap
import cbor2
from aiocoap import DELETE, GET, POST, Message
from aiocoap.numbers.codes import Code

from .errors import CcError, GatewayError
from .settings import Gateway

REQUEST_TIMEOUT = 5.0  # seconds for one request, retransmissions included
CBOR = 60  # Content-Format application/cbor


class ControlClient:
    def __init__(self, gateway: Gateway, *, timeout: float = REQUEST_TIMEOUT,
                 oscore: Path | None = None) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self.oscore = oscore  # an OSCORE context directory (`cc login`): protect every request
        self._ctx: aiocoap.Context | None = None

    async def __aenter__(self) -> ControlClient:
        # Only UDP: without a list aiocoap also sets up TCP, TLS and WebSocket clients.
        if self.oscore is None:
            self._ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
            return self
        self._ctx = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        try:
            self._ctx.client_credentials.load_from_dict(
                {f"{self.gateway.base}/*": {"oscore": {"basedir": str(self.oscore)}}})
        except Exception as e:  # aiocoap: missing/garbled files, lock held by another cc
            await self._ctx.shutdown()
            raise CcError(f"cannot use the OSCORE credentials in {self.oscore}: "
                          f"{_one_line(e)}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx is not None:
            await self._ctx.shutdown()
            if self.oscore is not None:
                release_oscore(self._ctx.client_credentials)

    def message(self, code: Code, path: str, payload: bytes = b"", **options: Any) -> Message:
        msg = Message(code=code, uri=f"{self.gateway.base}/{path}", payload=payload, **options)
        if payload:
            msg.opt.content_format = CBOR
        return msg

    async def exchange(self, msg: Message, *, blockwise: bool = False) -> Message:
        """Send one request; raise when nobody answers within the timeout.

        ``blockwise``: let aiocoap fetch a large response block by block (Block2): listings of
        many devices or jobs outgrow one datagram, and aiocoap's server splits them."""
        assert self._ctx is not None, "use ControlClient as an async context manager"
        limit = self.timeout
        try:
            return await asyncio.wait_for(
                self._ctx.request(msg, handle_blockwise=blockwise).response, limit)
        except (asyncio.TimeoutError, aiocoap.error.TimeoutError):
            raise NoAnswer(f"gateway {self.gateway.base} did not answer within {limit:g} s "
                           "(is `fota-gateway run` up, with this control bind?)") from None
        except aiocoap.error.NetworkError as e:
            reason = e.args[0] if e.args else e  # str(e) is aiocoap's generic help text
            raise Unreachable(
                f"gateway {self.gateway.base} unreachable: {_one_line(reason)}") from None
        except Exception as e:
            # OSCORE: the gateway refused our context (unknown, wrong key, replay) with an
            # unprotected error, which aiocoap raises instead of returning
            answer = getattr(e, "plain_message", None)
            if not isinstance(answer, Message):
                raise
            check(answer, msg.opt.uri_path and "/".join(msg.opt.uri_path) or "")
            raise CcError(f"gateway sent an unprotected {_code_text(answer.code)}") from None

    async def call(self, code: Code, path: str, body: Any = None) -> Any:
        """One control request: CBOR in, CBOR out; error codes raise ``GatewayError``."""
        payload = b"" if body is None else cbor2.dumps(body)
        response = await self.exchange(self.message(code, path, payload), blockwise=True)
        check(response, path)
        if not response.payload:
            return None
        try:
            return cbor2.loads(response.payload)
        except Exception as e:  # cbor2 raises several types; all mean a broken gateway answer
            raise CcError(f"gateway sent a response to {path} that is not CBOR: {e}") from None

    async def get(self, path: str) -> Any:
        return await self.call(GET, path)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call(POST, path, body)

    async def delete(self, path: str) -> Any:
        return await self.call(DELETE, path)


class Unreachable(CcError):
    """No answer from the gateway at all (as opposed to an error answer)."""


class NoAnswer(Unreachable):
    """Silence until the timeout: worth one more try on a lossy link, unlike a refusal."""


def check(response: Message, path: str) -> None:
    if response.code.is_successful():
        return
    diagnostic = response.payload.decode("utf-8", "replace").strip()
    raise GatewayError(_code_text(response.code), _one_line(diagnostic), path)


def segment(text: str) -> str:
    """One Uri-Path segment: device ids are operator text and may hold '/' or '?'."""
    return quote(text, safe="")


def _code_text(code: Code) -> str:
    return f"{code.dotted} {code.name_printable}"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def release_oscore(credentials: Any) -> None:
    """Write back an OSCORE context's sequence number and release its lock file now, not when
    the garbage collector gets to it (aiocoap's finaliser does the same, later)."""
    for item in credentials.values():
        if getattr(item, "lockfile", None) is not None and hasattr(item, "_destroy"):
            item._destroy()
