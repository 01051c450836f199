"""What the device bind answers: reports (``POST r``), the command (``GET c/<id>``) and firmware
blocks (``GET f/<image id>``). CoAP messaging (types, message ids, duplicates, Observe, Echo,
limits) is ``endpoint.py``'s; this module turns a request into a response.

``report`` and ``command`` run on the store's thread (``StoreWorker``: the endpoint hands them
over and answers when they are done); firmware blocks are served on the event loop from the
blob files, asking the store's thread only for what is not cached (an image id's blob, a blob
another gateway stored in the shared database).

Firmware blocks have two levels: the common well-formed request is answered from the datagram
bytes (``wire_block`` with ``blockwire``), anything unusual from an aiocoap ``Message``
(``block``, which also makes every error answer and records blob problems).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import cbor2
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from proto import uris
from proto.control import MAX_REPORT

from . import deltas, metrics
from .blobs import BlobStore, CorruptBlob
from .blockwire import encode_block_response
from .coapx import CBOR_FORMAT, answer, error, failure
from .devauth import DeviceAuth
from .fleet import Fleet
from .requests import Refused, Report, loads_exact, report_of
from .storage.worker import StoreWorker

log = logging.getLogger("fota.gateway")

DEFAULT_SZX = 6  # 1024 bytes: a GET without Block2 gets the first block with the more-flag


class DeviceApi:
    def __init__(self, fleet: Fleet, blobs: BlobStore, worker: StoreWorker) -> None:
        self.fleet = fleet
        self.blobs = blobs
        self.worker = worker  # runs everything here that reads or writes the store
        self.auth = DeviceAuth(fleet.store)
        self._images: dict[str, tuple[str, bytes]] = {}  # image id -> (digest hex, etag)
        fleet.on_image_removed = lambda image_id: self._images.pop(image_id, None)

    # ---- firmware blocks ------------------------------------------------------------------
    def wire_block(self, mtype: int, mid: int, token: bytes, image_id: str, num: int,
                   szx: int) -> bytes | None:
        """Response bytes for a well-formed block GET (``mtype`` and ``mid`` already those of
        the response), or None to take the Message path."""
        image = self._images.get(image_id)  # not cached: the Message path asks the store
        if image is None:
            return None
        try:
            fd, size = self.blobs.opened(image[0], fetch=False)
        except (OSError, CorruptBlob):
            return None
        bsize = 1 << (szx + 4)
        offset = num * bsize
        if offset >= size and not (num == 0 and size == 0):
            return None
        data = os.pread(fd, bsize, offset)
        metrics.block_served(len(data))
        return encode_block_response(mtype, mid, token, image[1], num,
                                     offset + len(data) < size, szx, size, data)

    def _image(self, image_id: str) -> tuple[str, bytes] | None:
        """(digest hex, etag) of an image id; on the store's thread."""
        got = self._images.get(image_id)
        if got is None:
            digest = deltas.blob_of(self.fleet.store, image_id)  # an image or a variant of one
            if digest is None:
                return None
            etag = bytes.fromhex(digest)[:uris.ETAG_BYTES]
            if len(self._images) >= 4096:  # images are few; ids that miss are not cached
                self._images.clear()
            got = self._images[image_id] = (digest, etag)
        return got

    async def block(self, request: Message) -> Message:
        try:
            return await self._block(request)
        except Exception as e:  # the store unavailable: 5.03, one log line a minute
            return failure(e, "firmware")

    async def _block(self, request: Message) -> Message:
        if request.code is not Code.GET:
            return error(Code.METHOD_NOT_ALLOWED, "GET f/<image id>")
        path = request.opt.uri_path
        if len(path) != 2:
            return error(Code.NOT_FOUND, "no such image")
        image = self._images.get(path[1])
        if image is None:
            image = await self.worker.call(lambda: self._image(path[1]))
        if image is None:
            return error(Code.NOT_FOUND, "no such image")
        digest_hex, etag = image
        try:
            try:
                fd, size = self.blobs.opened(digest_hex, fetch=False)
            except FileNotFoundError:
                if (self.blobs.shared is None
                        or not await self.worker.call(lambda: self.blobs.fetch(digest_hex))):
                    raise
                fd, size = self.blobs.opened(digest_hex, fetch=False)
        except (FileNotFoundError, CorruptBlob) as e:
            missing = isinstance(e, FileNotFoundError)
            if self.blobs.newly_bad(digest_hex):  # one event per problem, not one per block
                why = "blob file is missing" if missing else "blob does not hash to its name"
                try:  # the event, and its campaigns pause with their downloads stopped
                    await self.worker.call(lambda: self.fleet.blob_failed(digest_hex, why))
                except Exception as e2:  # e.g. a full disk: still answer the device, log it
                    log.error("could not pause the campaigns of image %s (%s): %s",
                              path[1], why, e2)
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
        metrics.block_served(len(data))
        more = offset + len(data) < size
        return Message(code=Code.CONTENT, payload=data, etag=etag, size2=size,
                       block2=BlockOption.BlockwiseTuple(num, more, szx))

    # ---- reports and commands -------------------------------------------------------------
    @staticmethod
    def decode_report(payload: bytes) -> tuple[Any, Report] | None:
        """A well-formed report's decoded map and ``Report``, else None. Decoded once, on the
        loop (the reply cache and the batch need its device id); ``report`` takes it along."""
        if len(payload) > MAX_REPORT:
            return None
        try:
            m = loads_exact(payload, "report")
            return m, report_of(m)
        except Exception:
            return None

    def report(self, request: Message, address: str,
               decoded: tuple[Any, Report] | None = None) -> Message:
        """On the store's thread (a grouped unit: it shares the next commit). ``decoded``:
        ``decode_report``'s (None: the payload is decoded here, refused with its reason)."""
        return answer(lambda: self._report(request, address, decoded), "device")

    def _report(self, request: Message, address: str,
                decoded: tuple[Any, Report] | None) -> Message:
        if request.code is not Code.POST:
            return error(Code.METHOD_NOT_ALLOWED, "POST a report to r")
        if request.opt.block1 is not None or len(request.payload) > MAX_REPORT:
            return error(Code.REQUEST_ENTITY_TOO_LARGE, f"a report is at most {MAX_REPORT} bytes",
                         size1=MAX_REPORT)
        if decoded is None:
            m = loads_exact(request.payload, "report")  # decoded once for both
            decoded = m, report_of(m)
        m, r = decoded
        sealed = self.auth.check_report(m)
        command = self.fleet.report(r, address)
        metrics.report_applied()
        if sealed is not None:
            command = DeviceAuth.seal(command, *sealed)
        if command is None:
            return Message(code=Code.CHANGED)
        return Message(code=Code.CHANGED, payload=cbor2.dumps(command),
                       content_format=CBOR_FORMAT)

    def command(self, request: Message) -> Message:
        """On the store's thread."""
        return answer(lambda: self._command(request), "device")

    def _command(self, request: Message) -> Message:
        if request.code is not Code.GET:
            return error(Code.METHOD_NOT_ALLOWED, "GET c/<device id>")
        path = request.opt.uri_path
        if len(path) != 2:
            return error(Code.NOT_FOUND, "no such resource")
        device_id = path[1]
        if self.auth.has_key(device_id):
            # a GET carries no MAC: a device with a key learns its commands from its reports
            raise Refused("unauthorized", "this device authenticates: its commands come only "
                          "in report responses")
        command = self.fleet.pending_command(device_id)
        if command is None:
            return Message(code=Code.CONTENT)
        return Message(code=Code.CONTENT, payload=cbor2.dumps(command),
                       content_format=CBOR_FORMAT)

