"""The update agent: one wake of a device as a generator of CoAP requests (sans-IO).

``Agent(config, slots, store, clock)``; ``wake()`` yields ``coap.Request`` objects, receives the
response (``coap.Message``; None: the exchange failed) and returns ``(action, seconds)``:
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
``deflate`` (MicroPython's ``deflate`` module, for hosts without it: sim/hostdeflate.py),
``gc_threshold`` (bytes allocated between collections, ``GC_THRESHOLD``, a quarter of it in a
heap under 100 KiB; 0: the port's own rule; it applies to the whole interpreter, the
application too).
"""

import binascii
import sys

from . import cbor, coap, const, lifecycle
from . import drop as _drop

# Heap: what only some wakes need is imported when needed and dropped after (on MicroPython,
# where a loaded module's bytecode lives in the heap): the boot check (bootcheck), the offer
# (offer, manifest, ed25519, sha512: ~13 KiB), the download (download, fetch, burst), bundle
# unpacking, the CBOR decoder (cbordecode: only for an answer that carries a command).
_DROP = sys.implementation.name == "micropython"
_PKG = __name__[:__name__.rfind(".") + 1]  # "fota."


def _collect():
    """A collection at a phase boundary: what the next phase keeps is placed in the holes the
    last one left, so the heap stays in few pieces (a datagram needs 1280 bytes in one)."""
    if _DROP:
        import gc

        gc.collect()


SLEEP = "sleep"
REBOOT = "reboot"

PERSIST_EVERY = 16384  # bytes between progress writes to flash (wear)
GC_THRESHOLD = 4096  # a collection every 4 KiB allocated: garbage never spreads over the heap,
# so a datagram's 1280-byte buffer finds room (smallest heap for a full update 80 -> 75 KiB on
# the 64-bit unix port; bench/footprint.py). A heap under 100 KiB, where that room is scarcest,
# collects every GC_THRESHOLD // 4: 62 -> 60.75 KiB (256 the same, 2048 61.25, 16384 61.75; a
# collection of such a heap takes ~12 us on the unix port)
WINDOW = 32  # most NON block requests in flight (config "window"; nothing held per block)
CHANGED = 0x44
CONTENT = 0x45

_CBOR_FORMAT = [(coap.CONTENT_FORMAT, coap.uint(coap.CBOR))]

IDLE = lifecycle.IDLE
DOWNLOADING = lifecycle.DOWNLOADING
DOWNLOADED = lifecycle.DOWNLOADED
UPDATING = lifecycle.UPDATING


def _hex(b):
    return binascii.hexlify(b).decode()


def _unhex(s):
    return binascii.unhexlify(s)


def _default_self_test(slots):
    return True


class Agent:
    def __init__(self, config, slots, store, clock=None):
        from . import configure  # its code leaves the heap once the agent is built

        try:
            configure.agent(self, config, slots, store, clock)
        finally:
            configure = None
            _drop("configure")
        # the modules an out-of-RAM wake keeps (it drops what a phase loaded since)
        self._kept = [n for n in sys.modules if n.startswith(_PKG)]

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
        # whatever phase ran out, its code goes too, or the report below and the next wakes
        # would run in what it left (measured: every later report of that power-on ran out);
        # after the collection, so that the list of modules finds room
        self._forget()
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
        act = self._handle(cmd) if cmd else None
        cmd = None  # an UPDATE's manifest and keys: not held through the download
        if self.s["state"] in (DOWNLOADING, DOWNLOADED) and not act:
            act = yield from self._download()
        if act:
            return act
        if self.s["unsent"] and not self._exhausted():
            cmd = yield from self._report()  # the outcome of this wake, while the radio is up
            if cmd and cmd.get(const.C_OP) == const.OP_DEFER:
                self._handle(cmd)  # the gateway says when to come back
        return (SLEEP, self.wait if self.wait is not None else self.wake_s)

    def _forget(self):
        """Drop what the phases of this wake left on MicroPython: the window (through it
        burst's code and the Fetch) and every module loaded since the agent was built."""
        if _DROP:
            self.window_stats = None
            _drop(*[n[len(_PKG):] for n in sys.modules
                    if n.startswith(_PKG) and n not in self._kept])

    def _exhausted(self):
        return self.failures >= self.max_failures

    # -- boot check --------------------------------------------------------------------------
    def _boot_check(self):
        if self.s["state"] not in (DOWNLOADED, UPDATING):
            return None  # nothing installed to confirm: bootcheck stays on flash
        from . import bootcheck

        try:
            return bootcheck.check(self)
        finally:
            bootcheck = None
            _drop("bootcheck")

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
                cmd = self.auth.open(bytes(resp.payload), counter)
            except ValueError:  # auth.AuthError: not from the gateway that holds our key
                self.failures += 1
                return None
            finally:
                _drop("cbordecode")  # loaded for this answer: not held through a download
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
            cmd = cbor.loads(bytes(resp.payload))
        except cbor.CBORError:
            return {}
        finally:
            _drop("cbordecode")
        return cmd if isinstance(cmd, dict) else {}

    def _handle(self, cmd):
        """A command from the gateway (command.py: imported for it, dropped after)."""
        from . import command

        try:
            return command.handle(self, cmd)
        finally:
            command = None
            _drop("command")

    def _content_key(self, wrapped):
        """(aes, content key) or the result to report (keywrap.content_key)."""
        from . import keywrap

        try:
            return keywrap.content_key(self.cfg, wrapped)
        finally:
            keywrap = None
            _drop("keywrap")
            _collect()  # the unwrap's garbage goes before anything long-lived is placed

    # -- download (download.py) and install ----------------------------------------------------
    def _download(self):
        """The download phase (download.py: imported for it and dropped after), then the
        install once the image is in and checked."""
        self.phase = const.PH_DOWNLOAD
        from . import download

        try:
            done = yield from download.run(self)
        finally:
            download = None
            _drop("download")
        return (yield from self._install()) if done else None

    def _install(self):
        """DOWNLOADED: the install phase (install.py: imported for it)."""
        from . import install

        try:
            return (yield from install.run(self))
        finally:
            install = None
            _drop("install")
