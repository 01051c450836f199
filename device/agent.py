"""The update agent: one wake of a device as a generator of CoAP requests (sans-IO).

``Agent(config, slots, store, clock)``; ``wake()`` yields ``coap.Request`` objects, receives the
``coap.Response`` (or None: the exchange failed) and returns ``(action, seconds)``:
``(SLEEP, s)`` sleep s seconds then wake again, ``(REBOOT, 0)`` reset the board now (the new
image is installed, or a failed one was rolled back). A board drives it with
``coap.run(agent.wake(), link)``, the simulator with ``sim.aio.drive``.

A wake: boot check (confirm or roll back a new image) -> report (the response carries the
command) -> handle the command -> download what is left, reporting a few times -> report the
outcome. Every state change goes through ``lifecycle.step``. At most ``max_failures`` failed
exchanges per wake: the rest waits for the next wake, from where it stopped.

Out of RAM anywhere in a wake (a MemoryError, also one thrown in by the driver from the link)
is a result, not a crash: the wake collects, reports result out_of_memory (3) with the phase
(``const.PH_*``) and the job, keeps the running image and the persisted state (a download
resumes from its last saved offset) and sleeps; the next wake tries again.

Config (a dict): ``id``, ``class``, ``trust`` (list of 32-byte keys or 64-char hex strings),
optional ``vendor`` (name, default the contract's; or ``vendor_id`` and ``class_id`` as hex,
for ports without ``hashlib.sha1``), ``version`` (seq of the factory image, 0),
``block_size`` (1024), ``max_failures`` (4), ``confirm_s`` (300: how long a new image may take
to pass its self-test), ``wake_s`` (60), ``self_test`` (callable(slots) -> True pass, False
fail, None not decided yet; default passes), ``key`` (64 hex characters: the report key from
``cc devices add --key``; reports then carry a MAC and only MACed responses count, see
device/auth.py) with ``counter_file`` (where its counter lives, default "fota_counter"),
``may_update`` (callable() -> False when the device cannot take an update now, e.g. low
battery: it reports result deferred and the gateway offers the job again later),
``fw_key`` / ``class_key`` (64 hex characters: the firmware key from ``cc devices add --key``,
the class key from ``cc firmware add --encrypt --class-key``; they unwrap the content key of
encrypted images, device/keywrap.py; without one that fits: result key unavailable, before any
download), ``aes`` (the ``cryptolib.aes`` constructor, for hosts without cryptolib),
``caps`` (``const.CAP_*`` bits to announce; default: deflate when the port has it, and deltas),
``deflate`` (MicroPython's ``deflate`` module, for hosts without it: sim/hostdeflate.py).
"""

import binascii
import hashlib
import sys
import time

from . import cbor, coap, const, lifecycle
from .slots import SlotError

# Heap: what only some wakes need is imported when needed and dropped after (on MicroPython,
# where a loaded module's bytecode lives in the heap): the manifest check (manifest, ed25519,
# sha512: ~10 KiB), the download (fetch), bundle unpacking.
_PKG = __name__[:__name__.rfind(".")]
_DROP = sys.implementation.name == "micropython"


def _drop(*names):
    """Forget modules of this package so the collector can take their code."""
    if not _DROP:
        return
    pkg = sys.modules.get(_PKG)
    for n in names:
        sys.modules.pop(_PKG + "." + n, None)
        if pkg is not None and n in pkg.__dict__:
            delattr(pkg, n)

DEFAULT_VENDOR = "fota-micropython.example"  # proto.manifest.DEFAULT_VENDOR (a test checks)

SLEEP = "sleep"
REBOOT = "reboot"

MAX_WAIT = 86400  # seconds: a DEFER asks for at most a day (no command may put a device to
# sleep for ever, nor hand it a non-number to sleep on)
MAX_JOB = 2**63 - 1
PERSIST_EVERY = 16384  # bytes between progress writes to flash (wear)
REPORT_EVERY = 65536  # bytes between progress reports, at most (and at least every 25 %)
STOP_AND_WAIT = "stop-and-wait"  # config "transfer": one CON GET per block (plain RFC 7959)
WINDOW = 32  # most NON block requests in flight (config "window"; nothing held per block)
CHANGED = 0x44
CONTENT = 0x45

_CBOR_FORMAT = [(coap.CONTENT_FORMAT, coap.uint(coap.CBOR))]

IDLE = lifecycle.IDLE
DOWNLOADING = lifecycle.DOWNLOADING
DOWNLOADED = lifecycle.DOWNLOADED
UPDATING = lifecycle.UPDATING


def _uuid5(namespace, name):
    if not hasattr(hashlib, "sha1"):
        raise ValueError("this port has no hashlib.sha1: put vendor_id and class_id (hex) in the config")
    h = hashlib.sha1(namespace + name.encode()).digest()
    b = bytearray(h[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


_NAMESPACE_DNS = binascii.unhexlify("6ba7b8109dad11d180b400c04fd430c8")


def ids(vendor, device_class):
    """SUIT vendor and class ids (UUID5, as proto.manifest makes them)."""
    v = _uuid5(_NAMESPACE_DNS, vendor)
    return v, _uuid5(v, device_class)


def _hex(b):
    return binascii.hexlify(b).decode()


def _unhex(s):
    return binascii.unhexlify(s)


def _default_self_test(slots):
    return True


class Agent:
    def __init__(self, config, slots, store, clock=None):
        self.cfg = config
        self.id = config["id"]
        self.cls = config["class"]
        self.trusted = [k if isinstance(k, bytes) else _unhex(k) for k in config["trust"]]
        if "class_id" in config:  # precomputed: ports without hashlib.sha1 (the WebAssembly one)
            self.vendor_id = _unhex(config["vendor_id"])
            self.class_id = _unhex(config["class_id"])
        else:
            self.vendor_id, self.class_id = ids(config.get("vendor", DEFAULT_VENDOR), self.cls)
        self.block_size = config.get("block_size", 1024)
        self.transfer = config.get("transfer", "window")
        self.window = config.get("window", WINDOW)
        self.window_stats = None  # the last burst.Window: its counters (benchmarks)
        self._restarts = 0
        self.max_failures = config.get("max_failures", 4)
        self.confirm_s = config.get("confirm_s", 300)
        self.wake_s = config.get("wake_s", 60)
        self.self_test = config.get("self_test") or _default_self_test
        self.deflate = lib = config.get("deflate")  # the module, where the port has none
        if lib is None:
            try:
                import deflate as lib  # built in: importing it costs no heap
            except ImportError:
                pass
        import gc  # decoding takes ~16 KiB more than a plain download: a heap of under 100 KiB
        # usable announces no decoders and gets plain images (tests/test_delta_upy.py: 104k
        # decodes, 96k ran out)
        big = not hasattr(gc, "mem_free") or gc.mem_free() + gc.mem_alloc() >= 102400
        # deltas where the heap allows, deflate where the port also has a decoder
        self.caps = config.get("caps", (const.CAP_DELTA | (const.CAP_DEFLATE if lib else 0))
                               if big else 0)
        self.slots = slots
        self.store = store
        self.clock = clock or time.time
        s = store.load()
        if not s:
            s = {"seq": config.get("version", 0), "state": IDLE, "result": const.RES_INITIAL,
                 "job": None, "unsent": False, "img": None, "offset": 0}
        self.s = s
        self._fetch = None  # survives wakes while the board stays up: resume without re-hash
        self._booted = False  # boot counted for this power-on
        self.failures = 0
        self.reports = 0  # report exchanges started by this agent object
        self.progress_reports = 0  # of which in the middle of a download
        self.wait = None
        self.phase = const.PH_BOOT  # where the wake is: reported when it runs out of RAM
        self.oom = None  # (phase, job) of an out-of-RAM not yet reported
        self.ooms = 0  # out-of-RAM wakes of this agent object, and the last one's phase
        self.oom_phase = None  # (diagnostics: bench/footprint.py)
        self._offered = None  # the job whose manifest is being checked
        self.on_change = config.get("on_change")  # callable(event, old, new): simulator logs
        self.auth = None
        if config.get("key"):
            from . import auth

            key = config["key"]
            self.auth = auth.ReportAuth(key if isinstance(key, bytes) else _unhex(key),
                                        config.get("counter_file", "fota_counter"))

    # -- the lifecycle ---------------------------------------------------------------------
    def _go(self, event, result=None):
        s = self.s
        old = s["state"]
        s["state"] = lifecycle.step(old, event)
        r = result if result is not None else lifecycle.RESULTS.get(event)
        if r is not None:
            s["result"] = r
        if self.on_change is not None and (old != s["state"] or event != lifecycle.BLOCK):
            self.on_change(event, old, s["state"])

    def _save(self):
        self.store.save(self.s)

    def _finish(self, event, result=None):
        """A transition that ends a job: its outcome waits in the state until delivered."""
        self._drop_fetch()
        self._go(event, result)
        self.s["img"] = None
        self.s["offset"] = 0
        self.s["unsent"] = True
        self._save()

    def _drop_fetch(self):
        if self._fetch is not None:
            self._fetch.close()
            self._fetch = None

    @property
    def state(self):
        return self.s["state"]

    @property
    def seq(self):
        return self.s["seq"]

    # -- one wake ----------------------------------------------------------------------------
    def wake(self):
        try:
            return (yield from self._wake())
        except MemoryError:
            pass
        # Out of RAM: drop what this wake built, keep what is on flash, say so and sleep.
        job = self.s["job"]
        if self.phase == const.PH_VERIFY:
            job = self._offered
        self.oom = (self.phase, job)
        self.ooms += 1
        self.oom_phase = self.phase
        self._fetch = None  # its buffers go; the slot file is closed below
        try:
            self.slots.close()
        except Exception:
            pass
        import gc

        gc.collect()
        try:
            if not self._exhausted():
                yield from self._report()
        except MemoryError:
            pass
        return (SLEEP, self.wake_s)

    def _wake(self):
        self.failures = 0
        self.wait = None
        self.phase = const.PH_BOOT
        act = self._boot_check()
        if act:
            return act
        if self.s["state"] == DOWNLOADED:  # verified before a power cut: no network needed
            act = yield from self._install()
            if act:
                return act
        cmd = None
        while cmd is None:
            cmd = yield from self._report()
            if cmd is None and self._exhausted():
                return (SLEEP, self.wake_s)
        act = self._handle(cmd)
        if self.s["state"] in (DOWNLOADING, DOWNLOADED) and not act:
            act = yield from self._download()
        if act:
            return act
        if self.s["unsent"] and not self._exhausted():
            cmd = yield from self._report()  # the outcome of this wake, while the radio is up
            if cmd and cmd.get(const.C_OP) == const.OP_DEFER:
                self._handle(cmd)  # the gateway says when to come back
        return (SLEEP, self.wait if self.wait is not None else self.wake_s)

    def _exhausted(self):
        return self.failures >= self.max_failures

    def _exchange(self, req):
        resp = yield req
        if resp is None:
            self.failures += 1
        return resp

    # -- boot check --------------------------------------------------------------------------
    def _boot_check(self):
        s = self.s
        img = s["img"]
        slots = self.slots
        if s["state"] == DOWNLOADED and img is not None:
            if img["slot"] in (slots.running(), slots.next_boot()):
                self._go(lifecycle.INSTALL)  # the power went between set_pending and saving
                s["boots"] = 0
                self._save()
        if s["state"] != UPDATING:
            return None
        if slots.running() != img["slot"]:
            if slots.next_boot() == img["slot"]:
                return (REBOOT, 0)  # installed, the reset did not happen yet
            # The bootloader went back: the new image crashed or ran twice unconfirmed.
            self._finish(lifecycle.ROLLBACK)
            return None
        if s.get("confirming"):
            return self._confirm()
        if not self._booted:
            self._booted = True
            s["boots"] = s.get("boots", 0) + 1
            if s["boots"] == 1:
                s["since"] = self.clock()
            self._save()
        if s["boots"] > 1:
            return self._rollback()
        verdict = self.self_test(slots)
        if verdict is True:
            return self._confirm()
        now = self.clock()
        if verdict is False or now - s["since"] > self.confirm_s or now < s["since"]:
            return self._rollback()
        self._go(lifecycle.BOOT_WAIT)
        return None

    def _confirm(self):
        s = self.s
        s["confirming"] = True  # confirm is two writes (slots, state): either order is safe now
        self._save()
        self.slots.confirm()
        s["seq"] = s["img"]["seq"]
        s["digest"] = s["img"]["digest"]  # the running image: the base a delta must name
        s.pop("confirming", None)
        s.pop("boots", None)
        s.pop("since", None)
        self._finish(lifecycle.CONFIRM)
        return None

    def _rollback(self):
        self.slots.rollback()
        s = self.s
        s.pop("boots", None)
        s.pop("since", None)
        self._finish(lifecycle.ROLLBACK)
        return (REBOOT, 0)

    # -- reports and commands ---------------------------------------------------------------
    def status(self):
        s = self.s
        m = {const.R_ID: self.id, const.R_CLASS: self.cls, const.R_SEQ: s["seq"],
             const.R_STATE: s["state"], const.R_RESULT: s["result"]}
        m[const.R_CAPS] = self.caps  # 0: plain images only, as from an agent without the key
        if s["job"] is not None:
            m[const.R_JOB] = s["job"]
        if self.oom is not None:
            m[const.R_RESULT] = const.RES_OUT_OF_MEMORY
            m[const.R_PHASE] = self.oom[0]
            if self.oom[1] is not None:
                m[const.R_JOB] = self.oom[1]
        img = s["img"]
        if img is not None:
            m[const.R_SIZE] = img["sent"][0] if "sent" in img else img["size"]  # bytes sent
            if s["state"] == DOWNLOADING:
                m[const.R_PROGRESS] = self._fetch.offset if self._fetch else s["offset"]
            else:
                m[const.R_PROGRESS] = m[const.R_SIZE]
            m[const.R_TARGET] = img["seq"]
        return m

    def _report(self):
        """One report exchange; return the command map ({} for none) or None if it failed."""
        self.phase = const.PH_REPORT
        req, counter = self._report_request()
        resp = yield req
        return self._report_answer(resp, counter)

    def _report_request(self):
        """The report Request and the MAC counter it used (None without a key)."""
        self.reports += 1
        counter = None
        if self.auth is not None:
            payload, counter = self.auth.seal(self.status())
        else:
            payload = cbor.dumps(self.status())
        return coap.Request(coap.POST, const.REPORT, payload=payload,
                            options=_CBOR_FORMAT), counter

    def _report_answer(self, resp, counter):
        """What the gateway answered to a report (None: the exchange failed)."""
        if resp is None:
            self.failures += 1
            return None
        if not (0x40 <= resp.code < 0x60):
            # 4.03 not enrolled, 4.01 bad MAC, 4.00, 5.xx: asking again now would only spend
            # the battery
            self.failures = self.max_failures
            return None
        if self.auth is not None:
            try:
                cmd = self.auth.open(resp.payload, counter)
            except ValueError:  # auth.AuthError: not from the gateway that holds our key
                self.failures += 1
                return None
            resp = None
        s = self.s
        self.oom = None  # delivered
        if s["unsent"]:
            s["unsent"] = False
            if s["state"] == IDLE:
                s["job"] = None  # delivered: the outcome stays in RESULT, the job is done
            self._save()
        if resp is None:
            return cmd  # authenticated above
        if not resp.payload:
            return {}
        try:
            cmd = cbor.loads(resp.payload)
        except cbor.CBORError:
            return {}
        return cmd if isinstance(cmd, dict) else {}

    def _handle(self, cmd):
        op = cmd.get(const.C_OP, const.OP_NONE)
        s = self.s
        if op == const.OP_DEFER:
            wait = cmd.get(const.C_WAIT)
            if isinstance(wait, int) and not isinstance(wait, bool) and wait >= 0:
                self.wait = min(wait, MAX_WAIT)
            return None
        if op == const.OP_CANCEL:
            job = cmd.get(const.C_JOB, s["job"])
            if s["state"] in (DOWNLOADING, DOWNLOADED) and job == s["job"]:
                self._finish(lifecycle.CANCEL)
            return None
        if op != const.OP_UPDATE:
            return None
        job = cmd.get(const.C_JOB)
        if not isinstance(job, int) or isinstance(job, bool) or not 0 <= job <= MAX_JOB:
            return None  # the job id goes into reports and the state file: an int or nothing
        if s["state"] == UPDATING:
            return None  # installing; the job's outcome comes after the reboot
        if s["state"] in (DOWNLOADING, DOWNLOADED) and job == s["job"]:
            return None  # the job in flight, sent again
        may = self.cfg.get("may_update")
        if s["state"] == IDLE and may is not None and not may():
            s["job"] = job  # before the signature check: a deferred update costs no CPU
            self._finish(lifecycle.DEFER)
            return None
        signed = cmd.get(const.C_MANIFEST)
        self.phase = const.PH_VERIFY
        self._offered = job
        from . import manifest

        try:
            if not isinstance(signed, bytes):
                raise manifest.Refused(const.RES_UNSUPPORTED_IMAGE, "no manifest")
            m = manifest.check(signed, self.trusted, self.vendor_id, self.class_id, s["seq"],
                               self.caps)
            base = m.get(const.M_DELTA_BASE)
            if base is not None and s.get("digest") not in (None, _hex(base)):
                raise manifest.Refused(const.RES_UNSUPPORTED_IMAGE, "base")
            uri = m[const.M_URI]
            size = m[const.M_SIZE]
            if not uri.startswith("/"):
                raise manifest.Refused(const.RES_INVALID_URI, "uri must be a path")
            if size > self.slots.capacity():
                raise manifest.Refused(const.RES_NO_SPACE, "image larger than a slot")
        except manifest.Refused as e:
            return self._refuse(job, e.result)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            return self._refuse(job, const.RES_UNSUPPORTED_IMAGE)  # malformed beyond the check
        finally:
            manifest = None
            _drop("manifest", "ed25519", "sha512")
        wrapped = None
        if const.M_ENC_ALG in m:  # before any download: refuse if no key of ours fits (after
            # the manifest code is dropped: the two never share the heap)
            wrapped = cmd.get(const.C_CEK)
            got = self._content_key(wrapped)
            if isinstance(got, int):
                return self._refuse(job, got)
        self._drop_fetch()
        self._go(lifecycle.ACCEPT)
        s["job"] = job
        s["unsent"] = False
        s["img"] = {"seq": m[const.M_SEQ], "digest": _hex(m[const.M_DIGEST]), "size": size,
                    "uri": uri, "etag": None, "slot": self.slots.inactive()}
        if wrapped is not None:  # kept wrapped: the content key itself never reaches flash
            s["img"]["wk"] = _hex(wrapped)
            s["img"]["iv"] = _hex(m[const.M_ENC_IV])
        if const.M_SENT_SIZE in m:  # compressed or a delta: decoded on the way (device/pipe.py)
            s["img"]["sent"] = [m[const.M_SENT_SIZE], m.get(const.M_COMPRESSION, 0),
                                base is not None]
        s["cp"] = None
        s["offset"] = 0
        s["fresh"] = True  # report the start of this download
        self._save()
        return None

    def _content_key(self, wrapped):
        """(aes, content key) unwrapped with this device's firmware key (or its class key), or
        the result to report: unsupported image (no AES on this port) or key unavailable."""
        aes = self.cfg.get("aes")
        if aes is None:
            try:
                from cryptolib import aes
            except ImportError:
                return const.RES_UNSUPPORTED_IMAGE
        from . import keywrap

        try:
            if isinstance(wrapped, bytes):
                for name in ("fw_key", "class_key"):
                    kek = self.cfg.get(name)
                    if kek:
                        try:
                            return aes, keywrap.unwrap(aes, _unhex(kek) if isinstance(kek, str)
                                                       else kek, wrapped)
                        except ValueError:  # wrapped under another key
                            pass
            return const.RES_KEY_UNAVAILABLE
        finally:
            keywrap = None
            _drop("keywrap")
            import gc

            gc.collect()  # the unwrap's garbage goes before anything long-lived is placed

    def _stage(self, img):
        """The decrypting stage of an encrypted download (None for a plain one; a result code
        if the key no longer unwraps), rebuilt on every resume: CTR needs only the offset."""
        if not img.get("wk"):
            return None
        got = self._content_key(_unhex(img["wk"]))
        if isinstance(got, int):
            return got
        from . import cipher

        return cipher.ctr(got[0], got[1], _unhex(img["iv"]))

    def _refuse(self, job, result):
        self._drop_fetch()
        self.s["job"] = job
        self._finish(lifecycle.REFUSE, result)
        return None

    # -- download ----------------------------------------------------------------------------
    def _download(self):
        s = self.s
        img = s["img"]
        self.phase = const.PH_DOWNLOAD
        from .fetch import Fetch

        if s["state"] == DOWNLOADING:
            f = self._fetch
            if f is None:
                stage = self._stage(img)
                if isinstance(stage, int):  # the key changed under a download in flight
                    self._finish(lifecycle.FAIL, stage)
                    return None
                if "sent" in img:  # compressed or a delta: decoded after any decryption
                    from .pipe import fetch

                    f = fetch(Fetch, self, img, stage)
                else:
                    f = Fetch(self.slots, img["uri"], img["size"], _unhex(img["digest"]),
                              self.block_size, stage)
                try:
                    f.start(s["offset"], _unhex(img["etag"]) if img["etag"] else None)
                except (OSError, SlotError, ValueError):
                    self._finish(lifecycle.FAIL, const.RES_NO_SPACE)
                    return None
                self._fetch = f
            # a pipe decodes in order: no windows, whose blocks come in any order
            if self.transfer == STOP_AND_WAIT or f.pipe is not None:
                done = yield from self._stop_and_wait(f, img)
            else:
                done = yield from self._windowed(f, img)
            if not done:
                return None
            if not f.verified():
                self._finish(lifecycle.CORRUPT)
                return None
            self._fetch = None
            f.close()
            s["offset"] = img["size"]
            self._go(lifecycle.COMPLETE)
            self._save()
        return (yield from self._install())

    def _report_step(self, f, img):
        """Bytes between progress reports, and the offset of the next one."""
        step = min(REPORT_EVERY, max(PERSIST_EVERY, img["size"] // 4))
        return step, (f.offset // step + 1) * step

    def _persist(self, f, img):
        """Every PERSIST_EVERY bytes: sync the slot, then save where a restart would resume.

        Through a pipe the restart point is its latest checkpoint (transfer offset, output
        offset and applier state, taken together), persisted once it is PERSIST_EVERY bytes
        of transfer or of output past the saved one."""
        s = self.s
        if f.pipe is None:
            if f.offset - s["offset"] < PERSIST_EVERY:
                return
            offset = f.offset
        else:
            offset = f.pipe.due(s, PERSIST_EVERY)  # puts the restart point in s["cp"]
            if offset is None:
                return
        self.slots.sync()
        s["offset"] = offset
        img["etag"] = _hex(f.etag) if f.etag else None
        self._save()

    def _window(self, f, img):
        from .burst import Window

        w = Window(img["uri"], img["size"], f.szx, f, offset=f.offset, etag=f.etag,
                   max_window=self.window, step=PERSIST_EVERY)
        self.window_stats = w
        return w

    def _refused(self, v, f, img):
        """None: ``v`` is no refusal. False: it ended the job (GONE, CORRUPT, or the image
        changed twice). True: the image changed, the download starts over."""
        from .fetch import CORRUPT, GONE, RESTART

        if v == GONE:
            self._finish(lifecycle.FAIL, const.RES_INVALID_URI)
            return False
        if v == CORRUPT:
            self._finish(lifecycle.CORRUPT)
            return False
        if v == RESTART:
            return self._restart(f, img)
        return None

    def _restart(self, f, img):
        """The image under the URI changed: start it over once (twice: it keeps changing)."""
        self._restarts += 1
        if self._restarts > 1:
            self._finish(lifecycle.CORRUPT)
            return False
        self._go(lifecycle.RESTART)
        f.restart()
        img["etag"] = None
        self.s["offset"] = 0
        self.s["cp"] = None
        self._save()
        return True

    def _stop_and_wait(self, f, img):
        """One CON GET per block (plain RFC 7959 servers). True: all blocks are in."""
        from .fetch import DONE, RETRY

        s = self.s
        step, next_report = self._report_step(f, img)
        if s.pop("fresh", None):
            yield from self._report_and_handle(img)
            if s["img"] is not img:
                return False
        self._restarts = 0
        while True:
            if self._exhausted():
                return False
            self.phase = const.PH_DOWNLOAD
            resp = yield from self._exchange(f.request())
            if resp is None:
                continue
            v = f.accept(resp)
            if v == RETRY:
                self.failures += 1
                continue
            go = self._refused(v, f, img)
            if go is not None:
                if not go:
                    return False
                continue
            self._go(lifecycle.BLOCK)
            if v == DONE:
                return True
            self._persist(f, img)
            if f.offset >= next_report:
                next_report += step
                yield from self._report_and_handle(img)
                if s["img"] is not img or s["state"] != DOWNLOADING:
                    return False

    def _windowed(self, f, img):
        """NON Block2 bursts (``burst.Window``), reports riding along. True: all blocks in."""
        s = self.s
        step, next_report = self._report_step(f, img)
        fresh = s.pop("fresh", None)
        self._restarts = 0
        f.reopen()  # an earlier window of this power-on may have written past f.offset
        w = self._window(f, img)
        while True:
            asked = False
            if fresh or f.offset >= next_report:
                if not fresh:
                    next_report = (f.offset // step + 1) * step
                fresh = False
                self.progress_reports += 1
                req, counter = self._report_request()
                w.ask(req)
                asked = True
            before = w.base
            self.phase = const.PH_DOWNLOAD
            yield w
            if w.base != before:
                self._go(lifecycle.BLOCK)
            if asked:
                cmd = self._report_answer(w.side_response, counter)
                if cmd:
                    self._handle(cmd)
                if s["img"] is not img or s["state"] != DOWNLOADING:
                    return False
            go = self._refused(w.verdict, f, img)
            if go is not None:
                if not go:
                    return False
                w = self._window(f, img)
                continue
            if w.verdict is not None:  # no answer for long: the link is down, next wake
                self.failures = self.max_failures
                self._persist(f, img)
                return False
            if w.complete:
                return True
            self._persist(f, img)
            if self._exhausted():
                return False

    def _install(self):
        """DOWNLOADED: mark the slot to boot next, tell the gateway, reboot into it."""
        s = self.s
        self.phase = const.PH_INSTALL
        _drop("fetch", "burst")
        try:
            self.slots.set_pending()
        except ValueError:  # bundle.BundleError: signed, but no app can come out of it
            self._finish(lifecycle.REFUSE, const.RES_UNSUPPORTED_IMAGE)
            return None
        finally:
            _drop("bundle")
        self._go(lifecycle.INSTALL)
        s["boots"] = 0
        self._save()
        yield from self._report()
        return (REBOOT, 0)

    def _report_and_handle(self, img):
        self.progress_reports += 1
        cmd = yield from self._report()
        if cmd:
            self._handle(cmd)
