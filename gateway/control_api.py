"""The control bind (cc only, loopback): exactly the API of ``proto/control.py``.

Every request is handled on the store's thread (``storage/worker.py``), uploads included (their
state and file writes live there too): the event loop only hands it over and sends the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from aiocoap.resource import PathCapable, Resource

from proto import uris
from proto.control import MAX_BODY, MAX_IMAGE

from .blobs import BlobStore, valid_digest_hex
from .coapx import (RETRY_AFTER, address_of, answer, cbor_response, error, failure, short_of,
                    shortage)
from . import deltas, oscore_creds
from .devauth import DeviceAuth
from .fleet import Fleet
from .requests import Refused, loads_exact
from .storage.worker import StoreWorker
from .views import JOBS_IN_VIEW
from .uploads import Block1Receiver, Busy, FileSink, Incomplete, MemorySink, TooLarge

log = logging.getLogger("fota.gateway")


class ControlSite(Resource, PathCapable):
    def __init__(self, fleet: Fleet, blobs: BlobStore, worker: StoreWorker,
                 uploads: Block1Receiver | None = None) -> None:
        super().__init__()
        self.fleet = fleet
        self.blobs = blobs
        self.worker = worker
        self.uploads = uploads or Block1Receiver()  # used on the store's thread only
        self.auth = DeviceAuth(fleet.store)
        self.require_oscore = False  # set by server.run with --oscore
        self.device_port: int | None = None  # the device bind's real port (server.run)

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        # GET: listings outgrow a datagram; aiocoap's Block2Cache keeps each rendered listing
        # for the few seconds a client needs to fetch its blocks, so they stay consistent.
        # Anything with a body: Block1 is ours (streamed to disk, limited), see uploads.py.
        # A GET with Block1 would make aiocoap raise a bare ValueError (a traceback per request,
        # found by bench/fuzz.py); our routes ignore the option instead.
        return request.code is Code.GET and request.opt.block1 is None

    async def render(self, request: Message) -> Message:
        if self.require_oscore and not oscore_creds.authenticated(request.remote):
            return error(Code.UNAUTHORIZED, "this gateway takes control requests only through "
                         "OSCORE: get credentials (fota-gateway credentials add) and `cc login`")
        path = request.opt.uri_path
        if path[:1] == (uris.FW,) and path[2:] == ("deltas",) and request.code is Code.POST:
            return await self.build_deltas(path[1])  # seconds of CPU: in a worker thread
        return await self._on_store(lambda: self._render(request))

    async def _on_store(self, handle: Any) -> Message:
        """``answer(handle)`` on the store's thread; its commit failing is a 5.03 too."""
        try:
            return await self.worker.call(lambda: answer(handle, "control"))
        except Exception as e:
            return failure(e, "control")

    async def build_deltas(self, image_id: str) -> Message:
        store = self.fleet.store
        plan: list[Any] = []

        def bases() -> Message:
            image = store.image(image_id)
            if image is None:
                return error(Code.NOT_FOUND, "no such image")
            if not deltas.plain(image):
                return error(Code.BAD_REQUEST, "an encrypted image gets no deltas: they would "
                             "be plaintext")
            pairs = [(b["digest"], image["digest"])
                     for b in store.delta_bases(image, deltas.MAX_BASES) if deltas.plain(b)]
            plan[:] = [image, [p for p in pairs
                               if all(self.blobs.size(d) is not None for d in p)]]  # here
            return Message(code=Code.CONTINUE)

        refused = await self._on_store(bases)
        if not plan:
            return refused
        image, pairs = plan
        try:
            built = await asyncio.to_thread(deltas.build_blobs, self.blobs, pairs)
        except (OSError, deltas.DeltaError) as e:
            log.error("building deltas to %s failed: %s", image_id, e)
            return error(Code.INTERNAL_SERVER_ERROR, f"building deltas failed: {e}")

        def record() -> Message:
            if self.blobs.shared is not None:  # other gateways on this database serve them too
                for _, sent, _ in built:
                    self.blobs.shared.put(sent, self.blobs.path(sent).read_bytes())
            deltas.record_built(store, image, built)
            return cbor_response(Code.CHANGED, deltas.variants(store, image_id))

        return await self._on_store(record)

    def _render(self, request: Message) -> Message:
        path, code = request.opt.uri_path, request.code
        head = path[0] if path else ""
        if head == uris.BLOB and len(path) == 2:
            if code is not Code.PUT:
                return error(Code.METHOD_NOT_ALLOWED, "PUT blob/<sha256 hex>")
            return self.put_blob(request, path[1])
        route = (head, len(path), str(code))
        if route == (uris.FW, 1, "POST"):
            return self.with_body(request, lambda b: cbor_response(
                Code.CREATED, {**self.fleet.register_image(b), "device_port": self.device_port}))
        if route == (uris.FW, 1, "GET"):
            return cbor_response(Code.CONTENT, [self.fleet.views.image_view(r)
                                                for r in self.fleet.store.images()])
        if route == (uris.FW, 3, "POST") and path[2] == "keys":
            return self.with_body(request, lambda b: cbor_response(
                Code.CHANGED, self.fleet.put_wrapped_keys(path[1], b)))
        if head == uris.FW and len(path) == 3 and path[2] == "deltas" and code is Code.GET:
            return cbor_response(Code.CONTENT, deltas.variants(
                self.fleet.store, None if path[1] == "-" else path[1]))
        if head == uris.FW and len(path) == 3 and path[2] == "variants" and code is Code.POST:
            return self.with_body(request, lambda b: cbor_response(Code.CREATED, deltas.register(
                self.fleet.store, self.blobs, path[1],
                b.get("manifest") if isinstance(b, dict) else None)))
        if route == (uris.DEV, 1, "GET"):
            return cbor_response(Code.CONTENT, self.fleet.views.device_views(request.opt.uri_query))
        if route == (uris.DEV, 1, "POST"):
            return self.with_body(request, lambda b: cbor_response(Code.CREATED,
                                                                   self.enrol(b)))
        if route == (uris.DEV, 2, "DELETE"):
            return cbor_response(Code.DELETED, self.fleet.remove_device(path[1]))
        if route == (uris.FW, 2, "DELETE"):
            return cbor_response(Code.DELETED, self.fleet.remove_image(path[1]))
        if route == (uris.DEV, 2, "GET"):
            return cbor_response(Code.CONTENT, self.fleet.views.device_detail(path[1]))
        if route == (uris.DEV, 3, "POST") and path[2] == "tags":
            return self.with_body(request, lambda b: cbor_response(
                Code.CHANGED, self.fleet.set_tags(path[1], b)))
        if route == (uris.CAMP, 1, "POST"):
            return self.with_body(request, lambda b: cbor_response(
                Code.CREATED, self.fleet.create_campaign(b)))
        if route == (uris.CAMP, 1, "GET"):
            return cbor_response(Code.CONTENT, [self.fleet.views.campaign_view(r)
                                                for r in self.fleet.store.campaigns()])
        if head == uris.CAMP and len(path) in (2, 3):
            n = _campaign_number(path[1])
            if len(path) == 2 and code is Code.GET:
                row = self.fleet.store.campaign(n)
                if row is None:
                    raise Refused("not_found", "unknown campaign")
                return cbor_response(Code.CONTENT, self.fleet.views.campaign_view(
                    row, with_jobs=True, limit=_jobs(request.opt.uri_query)))
            if len(path) == 3 and code is Code.POST and path[2] in CAMPAIGN_ACTIONS:
                action = getattr(self.fleet, f"{path[2]}_campaign")
                return cbor_response(Code.CHANGED, action(n))
        if route == (uris.EVENTS, 1, "GET"):
            return cbor_response(Code.CONTENT,
                                 self.fleet.views.events(_since(request.opt.uri_query)))
        known = {(uris.FW, 1), (uris.FW, 2), (uris.DEV, 1), (uris.DEV, 2), (uris.CAMP, 1),
                 (uris.CAMP, 2),
                 (uris.EVENTS, 1)}
        action = path[2] if len(path) == 3 else None
        if ((head, len(path)) in known or head == uris.CAMP and action in CAMPAIGN_ACTIONS
                or head == uris.DEV and action == "tags" or head == uris.FW and action == "keys"):
            return error(Code.METHOD_NOT_ALLOWED, f"{code} is not allowed on {'/'.join(path)}")
        return error(Code.NOT_FOUND, "no such resource")

    def enrol(self, body: Any) -> dict[str, Any]:
        """Enrol; with {"key": true} also give the device a report key (kept if it has one;
        {"rekey": true} replaces it). A new key is in this one response only (hex, for the
        device's configuration); the gateway never shows it again."""
        view = self.fleet.enrol(body)
        if body.get("key") is True or body.get("rekey") is True:
            key = self.auth.provision(view["id"], rekey=body.get("rekey") is True)
            if key is not None:
                view["key"] = key.hex()
        view["authenticated"] = self.auth.has_key(view["id"])
        return view

    def with_body(self, request: Message, handle: Any) -> Message:
        key = (address_of(request.remote), request.token if request.opt.block1 is None else b"",
               str(request.code), request.opt.uri_path)
        try:
            sink = self.uploads.feed(key, request.opt.block1, request.payload,
                                     lambda: MemorySink(MAX_BODY), _host(key[0]))
        except Busy:
            return _busy()
        except TooLarge:
            return error(Code.REQUEST_ENTITY_TOO_LARGE, f"body is limited to {MAX_BODY} bytes",
                         size1=MAX_BODY)
        except Incomplete:
            return error(Code.REQUEST_ENTITY_INCOMPLETE, "blocks out of order; start again at 0")
        if sink is None:
            return _continue(request)
        response = handle(loads_exact(bytes(sink.buf), "body"))
        response.opt.block1 = request.opt.block1
        return response

    def put_blob(self, request: Message, name: str) -> Message:
        name = name.lower()
        if not valid_digest_hex(name):
            return error(Code.BAD_REQUEST, "blob name must be the 64 hex digit SHA-256")
        if request.opt.size1 is not None and request.opt.size1 > MAX_IMAGE:
            return error(Code.REQUEST_ENTITY_TOO_LARGE, f"images are limited to {MAX_IMAGE} bytes",
                         size1=MAX_IMAGE)
        key = (address_of(request.remote), "PUT", request.opt.uri_path)
        try:
            sink = self.uploads.feed(key, request.opt.block1, request.payload,
                                     lambda: FileSink(self.blobs, name, MAX_IMAGE), _host(key[0]))
        except Busy:
            return _busy()
        except TooLarge:
            return error(Code.REQUEST_ENTITY_TOO_LARGE, f"images are limited to {MAX_IMAGE} bytes",
                         size1=MAX_IMAGE)
        except Incomplete:
            return error(Code.REQUEST_ENTITY_INCOMPLETE, "blocks out of order; start again at 0")
        except Exception as e:
            what = shortage(e)
            if what is not None:
                return short_of(what, e)
            raise
        if sink is None:
            return _continue(request)
        if sink.hash.hexdigest() != name:
            sink.discard()
            return error(Code.BAD_REQUEST, "uploaded bytes do not hash to the digest in the path")
        try:
            sink.commit()
        except Exception as e:
            what = shortage(e)
            if what is not None:
                return short_of(what, e)
            raise
        self.fleet.store.event("blob", f"blob {name[:16]}… stored, {sink.size} bytes")
        response = cbor_response(Code.CHANGED, {"digest": name, "size": sink.size})
        response.opt.block1 = request.opt.block1
        return response


CAMPAIGN_ACTIONS = ("cancel", "pause", "resume", "retry")  # POST camp/<n>/<action>


def _host(address: str) -> str:
    return address.rpartition(":")[0]


def _busy() -> Message:
    return error(Code.SERVICE_UNAVAILABLE, "too many uploads in progress; try again later",
                 max_age=RETRY_AFTER)


def _continue(request: Message) -> Message:
    b1 = request.opt.block1
    return Message(code=Code.CONTINUE, block1=BlockOption.BlockwiseTuple(b1.block_number, True,
                                                                         b1.size_exponent))


def _campaign_number(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise Refused("not_found", "unknown campaign")
    return int(text)


def _jobs(query: tuple[str, ...]) -> int:
    """``GET camp/<n>?jobs=K``: how many of its jobs the answer carries."""
    for q in query:
        k, _, v = q.partition("=")
        if k != "jobs":
            raise Refused("bad_request", f"unknown option {k!r} (jobs)")
        if not v.isdigit() or len(v) > 18:
            raise Refused("bad_request", "jobs must be an unsigned integer")
        return int(v)
    return JOBS_IN_VIEW


def _since(query: tuple[str, ...]) -> float:
    for q in query:
        if q.startswith("since="):
            try:
                return float(q[6:])
            except ValueError:
                raise Refused("bad_request", "since must be a unix time in seconds") from None
    return 0.0
