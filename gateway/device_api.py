"""The device bind: reports (``POST r``), the observable command (``GET c/<id>``) and firmware
blocks (``GET f/<image id>``).

Firmware blocks take a fast path (``FirmwareFastPath``): a block GET is idempotent and cheap
to regenerate, so it is answered on the spot, never entered into the deduplication cache
(which keeps ~4 KiB per request for 247 s and replays a stale block when a client's message
IDs wrap), never copied by ``Site`` and never given a task. Two levels: the common well-formed
request is answered from the datagram bytes (``blockwire``); anything unusual is decoded by
aiocoap and answered from the Message in front of the MessageManager (this level also makes
every error answer). Everything else (reports are not idempotent) goes through aiocoap
unchanged.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import cbor2
from aiocoap import ACK, CON, NON, Message
from aiocoap import interfaces
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from aiocoap.resource import PathCapable, Resource

from proto import uris
from proto.control import MAX_REPORT

from .blobs import BlobStore, CorruptBlob
from .blockwire import ACK as ACK_TYPE
from .blockwire import CON as CON_TYPE
from .blockwire import encode_block_response, parse_block_get
from .coapx import CBOR_FORMAT, address_of, answer, error
from .devauth import DeviceAuth
from .fleet import Fleet, Refused, loads_exact, parse_report

log = logging.getLogger("fota.gateway")

DEFAULT_SZX = 6  # 1024 bytes: a GET without Block2 gets the first block with the more-flag


class FirmwareFastPath:
    """Answers ``GET f/<id>`` directly from the transport's dispatch; see the module docstring."""

    def __init__(self, fleet: Fleet, blobs: BlobStore) -> None:
        self.fleet = fleet
        self.blobs = blobs
        self._images: dict[str, tuple[str, bytes]] = {}  # image id -> (digest hex, etag)
        self.mman: Any = None
        self._next = None
        self.served = 0

    def install(self, ctx: Any) -> None:
        """Put the fast paths in front of the UDP transport and MessageManager of a context."""
        (tman,) = ctx.request_interfaces
        self.mman = tman.token_interface
        self._next = self.mman.dispatch_message
        self.mman.dispatch_message = self.dispatch_message
        iface = self.mman.message_interface
        decode_and_dispatch = iface.datagram_msg_received
        sendmsg = iface.transport.sendmsg

        def datagram_msg_received(data: bytes, ancdata: list, flags: int, address: Any) -> None:
            req = parse_block_get(data)
            if req is not None:
                try:
                    out = self.wire_block(*req)
                except Exception as e:  # the Message path below answers (and logs) it
                    log.debug("block fast path declined: %s", e)
                    out = None
                if out is not None:
                    # reply from the address the request came to, as aiocoap would
                    anc = [a for a in ancdata if a[0] == socket.IPPROTO_IPV6
                           and a[1] == socket.IPV6_PKTINFO]
                    try:
                        sendmsg(out, anc, 0, address)
                    except OSError as e:  # e.g. unreachable: the client retransmits
                        log.debug("block response to %s not sent: %s", address, e)
                    self.served += 1
                    return
            decode_and_dispatch(data, ancdata, flags, address)

        iface.datagram_msg_received = datagram_msg_received

    def wire_block(self, mtype: int, mid: int, token: bytes, image_id: str, num: int,
                   szx: int) -> bytes | None:
        """Response bytes for a well-formed block GET, or None to take the Message path
        (which also produces every error answer and records blob problems)."""
        image = self._images.get(image_id) or self._image(image_id)
        if image is None:
            return None
        try:
            fd, size = self.blobs.opened(image[0])
        except (OSError, CorruptBlob):
            return None
        bsize = 1 << (szx + 4)
        offset = num * bsize
        if offset >= size and not (num == 0 and size == 0):
            return None
        data = os.pread(fd, bsize, offset)
        if mtype == CON_TYPE:
            mtype = ACK_TYPE
        else:
            mid = self.mman._next_message_id()
        return encode_block_response(mtype, mid, token, image[1], num,
                                     offset + len(data) < size, szx, size, data)

    def dispatch_message(self, message: Message) -> None:
        opt = message.opt
        if (message.code is Code.GET and message.mtype in (CON, NON)
                and opt.uri_path[:1] == (uris.FIRMWARE,)):
            try:
                response = self.block(message)
            except Exception as e:  # never let one request take the transport down
                log.exception("firmware request failed: %s", e)
                response = error(Code.INTERNAL_SERVER_ERROR, "internal error")
            response.token = message.token
            response.remote = message.remote
            if message.mtype is CON:
                response.mtype, response.mid = ACK, message.mid
            else:
                response.mtype, response.mid = NON, self.mman._next_message_id()
            self.mman.message_interface.send(response)
            self.served += 1
            return
        self._next(message)

    def _image(self, image_id: str) -> tuple[str, bytes] | None:
        got = self._images.get(image_id)
        if got is None:
            row = self.fleet.store.image(image_id)
            if row is None:
                return None
            etag = bytes.fromhex(row["digest"])[:uris.ETAG_BYTES]
            got = self._images[image_id] = (row["digest"], etag)
        return got

    def _record(self, kind: str, detail: str) -> None:
        try:
            self.fleet.store.event(kind, detail)
        except Exception as e:  # e.g. a full disk: still answer the device, still log it
            log.error("could not record event %s (%s): %s", kind, detail, e)

    def block(self, request: Message) -> Message:
        path = request.opt.uri_path
        if len(path) != 2:
            return error(Code.NOT_FOUND, "no such image")
        image = self._image(path[1])
        if image is None:
            return error(Code.NOT_FOUND, "no such image")
        digest_hex, etag = image
        try:
            fd, size = self.blobs.opened(digest_hex)
        except (FileNotFoundError, CorruptBlob) as e:
            missing = isinstance(e, FileNotFoundError)
            if self.blobs.newly_bad(digest_hex):  # one event per problem, not one per block
                self._record("blob", f"image {path[1]}: "
                             + ("blob file is missing" if missing else f"{e}; not serving it"))
            return error(Code.INTERNAL_SERVER_ERROR,
                         "image blob missing" if missing else "image blob corrupt")
        b2 = request.opt.block2
        if b2 is None:
            num, szx = 0, DEFAULT_SZX
        else:
            num, szx = b2.block_number, b2.size_exponent
            if szx > DEFAULT_SZX:
                return error(Code.BAD_REQUEST, "SZX 7 (BERT) is for CoAP over TCP only")
        bsize = 1 << (szx + 4)
        offset = num * bsize
        if offset >= size and not (num == 0 and size == 0):
            return error(Code.BAD_OPTION, f"block {num} is past the end ({size} bytes)")
        data = os.pread(fd, bsize, offset)
        more = offset + len(data) < size
        return Message(code=Code.CONTENT, payload=data, etag=etag, size2=size,
                       block2=BlockOption.BlockwiseTuple(num, more, szx))


class DeviceSite(Resource, interfaces.ObservableResource, PathCapable):
    """``POST r`` and ``GET c/<id>`` (observable). Blockwise assembly is off: no request on
    this bind needs it, and aiocoap's would keep copies per client."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self.auth = DeviceAuth(fleet.store)
        self._observers: dict[str, set[Any]] = {}
        fleet.on_command_change = self.command_changed

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False

    def command_changed(self, device_id: str) -> None:
        for obs in list(self._observers.get(device_id, ())):
            obs.trigger()

    async def add_observation(self, request: Message, serverobservation: Any) -> None:
        path = request.opt.uri_path
        if len(path) != 2 or path[0] != uris.COMMAND or self.fleet.store.device(path[1]) is None:
            # Declined. aiocoap 0.4.17 calls the cancellation callback of every observation,
            # accepted or not (AttributeError, a traceback per request: found by bench/fuzz.py),
            # so accept with a no-op and deregister before the first response goes out.
            serverobservation.accept(lambda: None)
            serverobservation.deregister()
            return
        device_id = path[1]
        self._observers.setdefault(device_id, set()).add(serverobservation)

        def cancel() -> None:
            group = self._observers.get(device_id)
            if group is not None:
                group.discard(serverobservation)
                if not group:
                    del self._observers[device_id]

        serverobservation.accept(cancel)

    async def render(self, request: Message) -> Message:
        return answer(lambda: self._render(request), "device")

    def _render(self, request: Message) -> Message:
        path = request.opt.uri_path
        if path == (uris.REPORT,):
            if request.code is not Code.POST:
                return error(Code.METHOD_NOT_ALLOWED, "POST a report to r")
            return self.report(request)
        if len(path) == 2 and path[0] == uris.COMMAND:
            if request.code is not Code.GET:
                return error(Code.METHOD_NOT_ALLOWED, "GET c/<device id>")
            return self.command(path[1])
        return error(Code.NOT_FOUND, "no such resource")

    def report(self, request: Message) -> Message:
        if request.opt.block1 is not None or len(request.payload) > MAX_REPORT:
            return error(Code.REQUEST_ENTITY_TOO_LARGE, f"a report is at most {MAX_REPORT} bytes",
                         size1=MAX_REPORT)
        r = parse_report(request.payload)
        sealed = self.auth.check_report(loads_exact(request.payload, "report"))
        command = self.fleet.report(r, address_of(request.remote))
        if sealed is not None:
            command = DeviceAuth.seal(command, *sealed)
        if command is None:
            return Message(code=Code.CHANGED)
        return Message(code=Code.CHANGED, payload=cbor2.dumps(command),
                       content_format=CBOR_FORMAT)

    def command(self, device_id: str) -> Message:
        if self.auth.has_key(device_id):
            # a GET carries no MAC: a device with a key learns its commands from its reports
            raise Refused("unauthorized", "this device authenticates: its commands come only "
                          "in report responses")
        command = self.fleet.pending_command(device_id)
        if command is None:
            return Message(code=Code.CONTENT)
        return Message(code=Code.CONTENT, payload=cbor2.dumps(command),
                       content_format=CBOR_FORMAT)
