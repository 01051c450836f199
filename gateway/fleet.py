"""Fleet operations on the store: reports, images, devices, campaigns. No CoAP in here.
Requests are parsed in ``requests.py``, job states move by ``jobs.py``'s table, every SQL
statement is ``storage/repo.py``'s, what is shown is ``views.py``'s; the clock and randomness
are injected.

Every method runs one durable transaction and writes an event for every state change it makes
(invariant 7); the API layers answer only after the method returned. Refusals are ``Refused``
with a kind the API layers map to a CoAP code and a one-line diagnostic.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from proto import manifest as mf
from proto import uris
from proto.codes import (CampaignState, JobState, Op, Result, State, phase_name, result_name,
                         state_name)
from proto.control import DEFAULT_TIMEOUT, MAX_LABEL, MAX_NOTES
from proto.keys import CmdKey, ManifestKey

from . import deltas, jobs, rollout, wrapped
from .blobs import BlobError, BlobStore
from .requests import MAX_TAGS, Refused, Report, check_id, check_tags
from .store import Store, tags_json
from .views import Views

#: job states holding a download slot (from the offer until the image is all there)
DOWNLOADING = (JobState.OFFERED, JobState.DOWNLOADING)
#: job states a cancel stops (later ones are installing: they finish and report)
CANCELLABLE = (JobState.QUEUED, JobState.OFFERED, JobState.DOWNLOADING)
DEFAULT_AUTO_REGISTER = 10_000  # self-registered (never enrolled) devices at once
DEFAULT_AUTO_EXPIRY = 30 * 86400.0  # seconds before a silent self-registered device is deleted
AUTO_SWEEP_SECONDS = 60.0  # how often that is checked (a scan of the devices table)
#: A campaign's rollout decision is re-read from its job counts (a scan of its jobs). A job that
#: finished triggers that at once while the campaign has at most REFRESH_SHARE jobs per change
#: since the last one (always, below 1,000 jobs); a bigger campaign is refreshed after every
#: total/REFRESH_SHARE changes and by the sweeper every REFRESH_SECONDS, so 100,000 jobs cost
#: 100 scans, not 100,000 (a phase is released, or the campaign done, that much later).
REFRESH_SHARE = 1000
REFRESH_SECONDS = 2.0


@functools.lru_cache(maxsize=1024)  # a few pairs in practice: not formatted per report
def _names(state: int, result: int) -> str:
    return f"{state_name(state)}/{result_name(result)}"


@functools.lru_cache(maxsize=4096)  # a few changes in practice: not formatted per report
def _change(state: int, result: int, new_state: int, new_result: int) -> str:
    return f"{_names(state, result)} -> {_names(new_state, new_result)}"


class Fleet:
    def __init__(self, store: Store, blobs: BlobStore, *, enrolled_only: bool = False,
                 max_downloads: int | None = None, auto_register: int = DEFAULT_AUTO_REGISTER,
                 auto_expiry: float = DEFAULT_AUTO_EXPIRY, clock: Callable[[], float] = time.time,
                 rand: random.Random | None = None) -> None:
        self.store = store
        self.clock = clock  # wall-clock seconds (deadlines, windows, event times)
        self.rand = rand or random.Random()  # jitter at window openings
        self.blobs = blobs
        self.enrolled_only = enrolled_only
        self.auto_register = 0 if enrolled_only else auto_register
        self.auto_expiry = auto_expiry
        self._self_registered = self._count_self_registered()
        self._next_auto_sweep = 0.0
        self.max_downloads = max_downloads  # concurrent downloads over all campaigns
        self._policies: dict[int, rollout.Policy] = {}
        #: campaign -> (its jobs at the last refresh, job changes since): see REFRESH_SHARE
        self._since_refresh: dict[int, tuple[int, int]] = {}
        self._deferred: set[int] | None = None  # campaigns to refresh once, after a bulk change
        self._next_refresh = 0.0
        self.views = Views(store, self.policy, clock)  # the read side (views.py)
        #: called with a device id whenever that device's pending command may have changed
        self.on_command_change: Callable[[str], None] = lambda device_id: None
        #: called with an image id once it is deleted (caches of it must go)
        self.on_image_removed: Callable[[str], None] = lambda image_id: None

    # ---- device reports -----------------------------------------------------------------
    def report(self, r: Report, address: str) -> dict[int, Any] | None:
        """Apply a report durably; return the command for the response (None: nothing)."""
        s = self.store
        now = self.clock()
        with s.transaction():
            dev = s.report_device(r.id, r.cls, r.seq, r.state, r.result, r.progress or 0,
                                  address, now, r.caps or 0, JobState.ACTIVE)
            if dev is None:
                if self.enrolled_only:
                    raise Refused("forbidden", "unknown device")
                if self._self_registered >= self.auto_register:
                    raise Refused("forbidden", "unknown device (the gateway takes no more "
                                  "self-registered devices: enrol it with cc)")
                self._self_registered += 1
                s.add_reported_device(r.id, r.cls, r.seq, r.state, r.result, r.progress or 0,
                                      address, now, r.caps or 0)
                s.event("registered", f"class {r.cls}, seq {r.seq}, {_names(r.state, r.result)}, "
                        f"from {address}", device=r.id)
            else:
                if dev["class"] != r.cls:
                    s.event("class", f"class {dev['class']} -> {r.cls}", device=r.id)
                if dev["seq"] != r.seq:
                    s.event("seq", f"running seq {dev['seq']} -> {r.seq}", device=r.id)
                if (dev["state"], dev["result"]) != (r.state, r.result):
                    job = f" (job {r.job})" if r.job is not None else ""
                    if r.phase is not None:
                        job += f" in {phase_name(r.phase)}"
                    s.event("state", _change(dev["state"], dev["result"], r.state, r.result)
                            + job, device=r.id)
                if dev["address"] != address and _host(dev["address"]) != _host(address):
                    # (a new source port per wake is normal)
                    s.event("address", f"address {dev['address']} -> {address}", device=r.id)
            if r.job is not None:
                self._apply_to_job(r, now)
            elif dev is None or dev["active_job"] is None:
                return None  # no job reported, none active: no command (the common report)
            command = self._command_for(r, now)
        return command

    def _apply_to_job(self, r: Report, now: float) -> None:
        s = self.store
        job = s.job(r.job)
        if job is None or job["device"] != r.id or job["state"] not in jobs.REPORTABLE:
            return
        camp = s.campaign(job["campaign"])
        image = s.image(camp["image"])
        event = jobs.report_event(r.state, r.result, r.seq, image["seq"])
        progress = r.progress if r.progress is not None else job["progress"]
        if event is None:
            if progress != job["progress"]:
                s.set_job_progress(job["id"], progress, now)
            return
        if self._stopped(job, image) and event != jobs.SUCCESS:
            return  # told to stop (its blob is unusable): it waits in the queue for a resume
        if job["state"] == JobState.TIMED_OUT and r.result == Result.CANCELLED:
            return  # the device stopped because it was told to (_command_for): still timed out
        late = job["state"] in (JobState.TIMED_OUT, JobState.CANCELLED)
        # deferred: offered again after the campaign's defer time
        not_before = now + self.policy(camp).defer if event == jobs.DEFER else None
        if event == jobs.SUCCESS:
            progress = job["sent_size"] or image["size"]
        if event == jobs.FAIL and deltas.failed(s, job, r.result):
            event = jobs.FALLBACK  # the delta did not apply: full image next (deltas.py)
        self._set_job(job, event, r.result if event == jobs.FAIL else jobs.RESULTS.get(event),
                      progress, now, ("late report: " if late else "") + _names(r.state, r.result),
                      not_before=not_before)

    def _set_job(self, job: Any, event: str, result: int | None, progress: int, now: float,
                 why: str, not_before: float | None = None) -> None:
        """The one writer of a job's state: the next state is ``jobs.step``'s."""
        s = self.store
        fresh = s.locked_job(job["id"])
        if fresh is None or fresh["state"] != job["state"]:
            return  # changed meanwhile (another gateway on the same database): that change wins
        state = jobs.step(job["state"], event)
        if state is None:
            return  # the table says: nothing changes
        s.set_job(job["id"], state, result, progress, now, not_before)
        if state != job["state"] or result != job["result"]:
            detail = f"job {job['id']}: {job['state']} -> {state}"
            if result is not None and result != Result.SUCCESS:
                detail += f" ({result_name(result)})"
            s.event("late report" if why.startswith("late report") else "job",
                    f"{detail}; {why}", device=job["device"], campaign=job["campaign"])
            self._job_moved(job["campaign"], job["state"], state)
            self.on_command_change(job["device"])

    # ---- rollout: phases, pause, release ---------------------------------------------------
    def policy(self, camp: Any) -> rollout.Policy:
        got = self._policies.get(camp["id"])
        if got is None:
            got = self._policies[camp["id"]] = rollout.Policy.from_json(json.loads(camp["policy"]))
        return got

    def phase_stats(self, n: int) -> list[rollout.PhaseStats]:
        stats: list[rollout.PhaseStats] = []
        for phase, state, count in self.store.phase_counts(n):
            while len(stats) <= phase:
                stats.append(rollout.PhaseStats())
            p = stats[phase]
            p.total += count
            if state == JobState.SUCCEEDED:
                p.succeeded += count
            elif state == JobState.SKIPPED:
                p.skipped += count
            elif state in (JobState.FAILED, JobState.TIMED_OUT):
                p.failed += count
            elif state == JobState.CANCELLED:
                p.cancelled += count
            else:
                p.active += count
                if state in DOWNLOADING:
                    p.downloading += count
        return stats or [rollout.PhaseStats()]

    def _set_campaign_state(self, camp: Any, new: str, reason: str | None = None) -> None:
        n = camp["id"]
        self.store.set_campaign_state(n, new, reason)
        why = f": {reason}" if reason else ""
        self.store.event("campaign", f"campaign {n}: {camp['state']} -> {new}{why}", campaign=n)

    def _job_moved(self, n: int, old: str, new: str) -> None:
        """A job of campaign ``n`` changed state: refresh the campaign now or soon."""
        if old in JobState.ACTIVE and new in JobState.ACTIVE:
            return  # no input of the rollout decision changed (finals and totals: rollout.py)
        if self._deferred is not None:
            self._deferred.add(n)
            return
        seen = self._since_refresh.get(n)
        if seen is not None and (seen[1] + 1) * REFRESH_SHARE < seen[0]:
            self._since_refresh[n] = (seen[0], seen[1] + 1)
            return  # a big campaign: a later change or the sweeper refreshes it
        self._refresh_campaign(n)

    def _refresh_campaigns(self, running: list[int], now: float) -> None:
        """The sweeper's pass: every running campaign, every REFRESH_SECONDS (a big one's last
        changes, or those another gateway on the database made, are seen here)."""
        if now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_SECONDS
        for n in running:
            with self.store.transaction():
                self._refresh_campaign(n)

    def _refresh_campaign(self, n: int) -> None:
        """After a job finished: done when nothing is active; else let the policy release the
        next phases or pause the campaign."""
        s = self.store
        s.lock_campaign(n)  # gateways sharing a database release a phase once
        camp = s.campaign(n)
        if camp["state"] == CampaignState.CANCELLED:
            return
        stats = self.phase_stats(n)
        self._since_refresh[n] = (sum(p.total for p in stats), 0)
        if sum(p.active for p in stats) == 0:
            if camp["state"] != CampaignState.DONE:
                self._set_campaign_state(camp, CampaignState.DONE)
            return
        if camp["state"] == CampaignState.DONE:  # retried jobs: it runs again
            self._set_campaign_state(camp, CampaignState.RUNNING)
            camp = s.campaign(n)
        if camp["state"] != CampaignState.RUNNING:
            return
        policy = self.policy(camp)
        d = rollout.decide(policy, stats, camp["released"], camp["acknowledged"])
        if d.newly:
            self._release(camp, d.released, d.newly, policy, stats)
        if d.pause is not None:
            self._set_campaign_state(s.campaign(n), CampaignState.PAUSED, d.pause)

    def _release(self, camp: Any, released: int, phases: list[int], policy: rollout.Policy,
                 stats: list[rollout.PhaseStats]) -> None:
        n = camp["id"]
        self.store.set_released(n, released)
        for k in phases:
            self.store.event("campaign", f"campaign {n}: {rollout.phase_name(k, policy)} "
                             f"released ({stats[k].total} device(s))", campaign=n)
        for device_id in self.store.devices_in_phases(n, phases):
            self.on_command_change(device_id)

    def pause_campaign(self, n: int) -> dict[str, Any]:
        with self.store.transaction():
            camp = self._campaign(n)
            if camp["state"] != CampaignState.RUNNING:
                raise Refused("conflict", f"campaign {n} is {camp['state']}, not running")
            self._set_campaign_state(camp, CampaignState.PAUSED, "paused by the operator")
        return self.views.campaign_view(self.store.campaign(n))

    def resume_campaign(self, n: int) -> dict[str, Any]:
        """Go on: the failures so far are acknowledged (only new ones count towards the
        threshold) and a phase that stalled below its success rate is passed over."""
        s = self.store
        with s.transaction():
            camp = self._campaign(n)
            if camp["state"] != CampaignState.PAUSED:
                raise Refused("conflict", f"campaign {n} is {camp['state']}, not paused")
            self._check_blob(s.image(camp["image"]))
            policy = self.policy(camp)
            stats = self.phase_stats(n)
            released = rollout.on_resume(policy, stats, camp["released"])
            s.set_acknowledged(n, rollout.failures(stats, released))
            self._set_campaign_state(camp, CampaignState.RUNNING, None)
            if released != camp["released"]:
                self._release(camp, released, [released], policy, stats)
            self._refresh_campaign(n)
        return self.views.campaign_view(s.campaign(n))

    def retry_campaign(self, n: int) -> dict[str, Any]:
        """Failed and timed-out jobs start over as new jobs (new ids: a late report about the
        old attempt cannot touch the new one), in their phase; the campaign runs again."""
        s = self.store
        now = self.clock()
        with s.transaction():
            camp = self._campaign(n)
            if camp["state"] == CampaignState.CANCELLED:
                raise Refused("conflict", f"campaign {n} is cancelled")
            if now > camp["deadline"]:
                raise Refused("conflict", f"campaign {n} is past its deadline; start a new one")
            retried = skipped = 0
            for job in s.jobs_of_campaign(n):
                if job["state"] not in (JobState.FAILED, JobState.TIMED_OUT):
                    continue
                if self._active_job(job["device"]) is not None:
                    skipped += 1  # in another campaign meanwhile
                    continue
                s.delete_job(job["id"])
                new = s.add_job(n, job["device"], JobState.QUEUED, job["size"], now, job["phase"])
                s.event("job", f"job {job['id']}: {job['state']} -> retried as job {new}",
                        device=job["device"], campaign=n)
                retried += 1
            if not retried:
                raise Refused("conflict", f"campaign {n} has no failed job to retry"
                              + (f" ({skipped} device(s) busy elsewhere)" if skipped else ""))
            stats = self.phase_stats(n)
            s.set_acknowledged(n, rollout.failures(stats, camp["released"]))
            camp = s.campaign(n)
            if camp["state"] == CampaignState.PAUSED:
                self._set_campaign_state(camp, CampaignState.RUNNING, None)
            self._refresh_campaign(n)
        for job in s.jobs_of_campaign(n):
            if job["state"] == JobState.QUEUED:
                self.on_command_change(job["device"])
        return self.views.campaign_view(s.campaign(n))

    def _already_current(self, targets: list[Any], image: Any) -> dict[str, int]:
        """Targets that reported running the image's sequence number or a newer one (id ->
        seq): their jobs are skipped, not counted as updates. No target left: refused."""
        ahead = {t["id"]: t["seq"] for t in targets
                 if t["last_seen"] is not None and t["seq"] >= image["seq"]}
        if ahead and len(ahead) == len(targets):
            lo, hi = min(ahead.values()), max(ahead.values())
            seqs = f"seq {lo}" if lo == hi else f"seq {lo}-{hi}"
            raise Refused("conflict", f"no targeted device can take image {image['id']} "
                          f"(seq {image['seq']}): all {len(ahead)} already run {seqs}"
                          + (", a newer image" if lo > image["seq"] else ""))
        return ahead

    @staticmethod
    def _check_window(policy: rollout.Policy, now: float, deadline: float) -> None:
        """A maintenance window that cannot open before the deadline would only time out."""
        w = policy.window
        if w is None:
            return
        opens = w.next_open(now)
        if opens >= deadline:
            raise Refused("bad_request", f"the maintenance window next opens {w.show(opens)}, "
                          f"after the campaign's deadline {w.show(deadline)}: give a --timeout "
                          f"of more than {math.ceil(opens - now)} s")

    def _campaign(self, n: int) -> Any:
        camp = self.store.campaign(n)
        if camp is None:
            raise Refused("not_found", "unknown campaign")
        return camp

    def _gate(self, job: Any, camp: Any, now: float) -> dict[int, Any] | None:
        """For a queued job: None to offer it now, {} for no command yet (not its turn),
        or a DEFER command."""
        if camp["state"] != CampaignState.RUNNING or job["phase"] > camp["released"]:
            return {}
        if job["not_before"] is not None and job["not_before"] > now:
            return {CmdKey.OP: Op.DEFER, CmdKey.WAIT: math.ceil(job["not_before"] - now)}
        policy = self.policy(camp)
        if policy.max_downloads is not None or self.max_downloads is not None:
            self.store.lock_downloads()  # exact caps over every gateway on the database
        mine = (self.store.count_jobs(DOWNLOADING, camp["id"])
                if policy.max_downloads is not None else 0)
        everyone = (self.store.count_jobs(DOWNLOADING)
                    if self.max_downloads is not None else 0)
        wait = rollout.defer_seconds(policy, now, mine, everyone, self.max_downloads)
        if wait is None:
            return None
        seconds, why = wait
        if policy.window is not None and why == rollout.OUTSIDE_WINDOW:  # no stampede at opening
            seconds += self.rand.randint(0, min(300, policy.window.duration // 4))
        return {CmdKey.OP: Op.DEFER, CmdKey.WAIT: seconds}

    def _active_job(self, device_id: str, lock: bool = False) -> Any:
        return self.store.active_job(device_id, JobState.ACTIVE, lock=lock)

    def _command_for(self, r: Report, now: float) -> dict[int, Any] | None:
        s = self.store
        if r.job is not None and r.state != State.IDLE:
            reported = s.job(r.job)
            if (reported is not None and reported["device"] == r.id
                    and (reported["state"] == JobState.CANCELLED
                         or self._stopped(reported)
                         or (reported["state"] == JobState.TIMED_OUT
                             and r.state in (State.DOWNLOADING, State.DOWNLOADED)))):
                # the job is over: a device still fetching for it stops now (one installing
                # it goes on, and its success is recorded late)
                return {CmdKey.OP: Op.CANCEL, CmdKey.JOB: r.job}
        job = self._active_job(r.id)
        if job is None:
            return None
        lost = r.job != job["id"]
        if not lost and job["state"] != JobState.QUEUED:
            return None
        camp = s.campaign(job["campaign"])
        image = s.image(camp["image"])
        if r.seq >= image["seq"]:
            if r.seq > image["seq"] or job["state"] == JobState.QUEUED:
                # it did not update: it runs this sequence number (or a newer one) already
                self._set_job(job, jobs.SKIP, None, job["progress"], now,
                              f"already running seq {r.seq} (image seq {image['seq']})")
            else:
                self._set_job(job, jobs.SUCCESS, Result.SUCCESS, image["size"], now,
                              f"already running seq {r.seq}")
            return None
        if r.cls != image["class"]:
            self._set_job(job, jobs.FAIL, Result.WRONG_CLASS, job["progress"], now,
                          f"device class {r.cls} is not the image's {image['class']}")
            return None
        if job["state"] == JobState.QUEUED:
            gate = self._gate(job, camp, now)
            if gate is not None:
                return gate or None
        self._set_job(job, jobs.OFFER, None, job["progress"], now,
                      "manifest handed out" if job["state"] == JobState.QUEUED
                      else "device lost the command")
        return self._update(job, image, r.id)

    def pending_command(self, device_id: str) -> dict[int, Any] | None:
        """What an observer of ``c/<id>`` sees; reading it changes nothing."""
        dev = self.store.device(device_id)
        if dev is None:
            raise Refused("not_found", "unknown device")
        job = self._active_job(device_id)
        if job is not None:
            camp = self.store.campaign(job["campaign"])
            image = self.store.image(camp["image"])
            if self._stopped(job, image) and dev["state"] in (State.DOWNLOADING, State.DOWNLOADED):
                return {CmdKey.OP: Op.CANCEL, CmdKey.JOB: job["id"]}
            if job["state"] == JobState.QUEUED:
                gate = self._gate(job, camp, self.clock())
                if gate is not None:
                    return gate or None
            if dev["seq"] < image["seq"]:
                return self._update(job, image, device_id, record=False)
            return None
        last = self.store.last_job(device_id)
        if last is not None and last["state"] == JobState.CANCELLED and dev["state"] != State.IDLE:
            return {CmdKey.OP: Op.CANCEL, CmdKey.JOB: last["id"]}
        return None

    # ---- images ---------------------------------------------------------------------------
    def register_image(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise Refused("bad_request", "body must be a CBOR map")
        signed, cls, vendor = body.get("manifest"), body.get("class"), body.get("vendor")
        if not isinstance(signed, bytes):
            raise Refused("bad_request", "manifest must be a byte string (COSE_Sign1)")
        cls = check_id(cls, "class")
        if not isinstance(vendor, str) or not vendor:
            raise Refused("bad_request", "vendor must be a non-empty text string")
        try:
            m = mf.parse(signed)
        except mf.ManifestError as e:
            raise Refused("bad_request", f"bad manifest: {e}") from None
        if m[ManifestKey.VENDOR] != mf.vendor_id(vendor):
            raise Refused("bad_request", f"manifest vendor id is not that of {vendor!r}")
        if m[ManifestKey.CLASS] != mf.class_id(vendor, cls):
            raise Refused("bad_request", f"manifest class id is not that of {cls!r}")
        digest: bytes = mf.sent_digest(m)  # what the URI serves: the ciphertext if encrypted
        size, seq, uri = m[ManifestKey.SIZE], m[ManifestKey.SEQ], m[ManifestKey.URI]
        if uri != uris.image_path(digest):
            raise Refused("bad_request", f"manifest uri must be {uris.image_path(digest)}")
        stored = self.blobs.size(digest.hex())
        if stored is None:
            raise Refused("bad_request", "no blob with the manifest's digest: upload it first")
        if stored != size:
            raise Refused("bad_request", f"manifest size {size} but the blob has {stored} bytes")
        image_id = uris.image_id(digest)
        label, notes = _image_text(body)
        with self.store.transaction():
            old = self.store.image(image_id)
            if old is not None:
                if old["manifest"] == signed:
                    return self.views.image_view(old)  # idempotent re-registration
                if body.get("supersede") is not True:
                    raise Refused("conflict", f"image {image_id} is already registered at seq "
                                  f"{old['seq']}; to re-sign it at a higher seq: `cc rollback "
                                  f"--to {image_id}` or `cc firmware add … --supersede`")
                self._supersede(old, signed, seq, cls, vendor, label, notes)
                return self.views.image_view(self.store.image(image_id))
            self.store.add_image(image_id, digest.hex(), size, seq, cls, vendor, uri, signed,
                                 self.clock(), label, notes)
            self.store.event("image", f"image {image_id} registered: class {cls}, seq {seq}, "
                             f"{size} bytes{', encrypted' if mf.encrypted(m) else ''}"
                             + (f", label {label}" if label else ""))
        return self.views.image_view(self.store.image(image_id))

    def _supersede(self, old: Any, signed: bytes, seq: int, cls: str, vendor: str,
                   label: str | None, notes: str | None) -> None:
        """Fleet rollback: the same bytes under a new manifest with a higher sequence number,
        so devices that moved past the old one take it again and anti-rollback still holds.
        The image keeps its id (its digest); campaigns that are still running would see their
        manifest change under them, so it is refused while one uses the image."""
        n = old["id"]
        if (cls, vendor) != (old["class"], old["vendor"]):
            raise Refused("bad_request", f"image {n} is for class {old['class']} of "
                          f"{old['vendor']}; a superseding manifest must name the same")
        if seq <= old["seq"]:
            raise Refused("conflict", f"image {n} is at seq {old['seq']}: a superseding "
                          f"manifest needs a higher seq, not {seq}")
        busy = self.store.campaigns_of_image(n, (CampaignState.RUNNING, CampaignState.PAUSED))
        if busy:
            raise Refused("conflict", f"image {n} is used by campaign(s) "
                          f"{', '.join(str(r['id']) for r in busy)}; cancel them first")
        self.store.resign_image(n, signed, seq, label, notes)
        self.store.event("image", f"image {n} re-signed: seq {old['seq']} -> {seq} "
                         "(the same bytes: a fleet rollback)")

    def put_wrapped_keys(self, image_id: str, body: Any) -> dict[str, Any]:
        """Store the content key of an encrypted image wrapped for recipients (gateway/wrapped)."""
        row = self.store.image(image_id)
        if row is None:
            raise Refused("not_found", "unknown image")
        if not mf.encrypted(mf.parse(row["manifest"])):
            raise Refused("bad_request", f"image {image_id} is not encrypted")
        try:
            wrapped.put(self.store, image_id, body)
        except wrapped.BadKeys as e:
            raise Refused("bad_request", str(e)) from None
        return self.views.image_view(self.store.image(image_id))

    def _update(self, job: Any, image: Any, device_id: str, record: bool = True) -> dict[int, Any]:
        cmd = {CmdKey.OP: Op.UPDATE, CmdKey.JOB: job["id"],
               CmdKey.MANIFEST: deltas.offer(self.store, job, image, record)}  # or a variant
        cek = wrapped.for_device(self.store, image["id"], device_id)
        if cek is not None:  # none: an encrypted image's device refuses (result key unavailable)
            cmd[CmdKey.CEK] = cek
        return cmd


    # ---- clean-up: decommissioned devices, images no longer wanted ------------------------
    def remove_device(self, device_id: str) -> dict[str, Any]:
        """Decommission: the device, its report key and its finished jobs go; its events stay
        (the record of what happened). Refused while it has an unfinished job."""
        s = self.store
        with s.transaction():
            if s.device(device_id) is None:
                raise Refused("not_found", "unknown device")
            job = self._active_job(device_id)
            if job is not None:
                raise Refused("conflict", f"device {device_id} has job {job['id']} "
                              f"({job['state']}) in campaign {job['campaign']}; cancel that "
                              "campaign first")
            jobs_removed = s.remove_device(device_id)
            s.event("removed", f"decommissioned: device, report key and {jobs_removed} "
                    "finished job(s) removed; its events are kept", device=device_id)
        return {"id": device_id, "jobs_removed": jobs_removed}

    def remove_image(self, image_id: str) -> dict[str, Any]:
        """Delete an image no running or paused campaign uses, with its finished campaigns and
        their jobs (their events stay); its blob is deleted once no image refers to it."""
        s = self.store
        with s.transaction():
            image = s.image(image_id)
            if image is None:
                raise Refused("not_found", "unknown image")
            camps = s.campaigns_of_image(image_id, (CampaignState.RUNNING, CampaignState.PAUSED,
                                                    CampaignState.DONE, CampaignState.CANCELLED))
            busy = [str(c["id"]) for c in camps
                    if c["state"] in (CampaignState.RUNNING, CampaignState.PAUSED)]
            if busy:
                raise Refused("conflict", f"image {image_id} is used by campaign(s) "
                              f"{', '.join(busy)}; cancel them first")
            done = [c["id"] for c in camps]
            unused = s.delete_variants(image_id)  # its deflated copy and deltas (deltas.py)
            s.remove_image(image_id, done)
            shared = s.count_images_with_digest(image["digest"])
            s.event("image", f"image {image_id} removed (seq {image['seq']}, class "
                    f"{image['class']})" + (f" with its finished campaign(s) "
                                            f"{', '.join(map(str, done))}" if done else ""))
        for digest in unused:
            self.blobs.remove(digest)
        deleted = not shared and self.blobs.remove(image["digest"])
        if deleted:
            s.event("blob", f"blob {image['digest'][:16]}… deleted: no image refers to it")
        self.on_image_removed(image_id)
        return {"id": image_id, "campaigns_removed": done, "blob_deleted": deleted}

    # ---- blob problems --------------------------------------------------------------------
    def blob_failed(self, digest_hex: str, why: str) -> None:
        """A stored blob is missing or no longer hashes to its name: mark its images, pause
        every campaign using them with that reason and stop their downloads (the jobs go back
        to the queue; their devices get CANCEL on their next report or notification)."""
        s = self.store
        now = self.clock()
        with s.transaction():
            for image in s.images_with_digest(digest_hex):
                reason = f"image {image['id']} cannot be served: {why}"
                s.set_image_problem(image["id"], why)
                s.event("image", reason)
                for camp in s.campaigns_of_image(image["id"], (CampaignState.RUNNING,
                                                               CampaignState.PAUSED)):
                    self._set_campaign_state(camp, CampaignState.PAUSED, reason)
                    for job in s.jobs_of_campaign(camp["id"]):
                        if job["state"] in DOWNLOADING:
                            self._set_job(job, jobs.STOP, None, job["progress"], now,
                                          "download stopped: the image cannot be served")

    def _check_blob(self, image: Any) -> None:
        """Refuse to offer an image whose blob was found unusable until it is good again
        (re-uploaded with `cc firmware add`, or restored); then clear the mark."""
        if image["problem"] is None:
            return
        try:
            self.blobs.opened(image["digest"])
        except (OSError, BlobError):
            raise Refused("conflict", f"image {image['id']} cannot be served "
                          f"({image['problem']}): upload it again with `cc firmware add` "
                          "first") from None
        self.store.set_image_problem(image["id"], None)
        self.store.event("image", f"image {image['id']}: blob good again")

    def _stopped(self, job: Any, image: Any = None) -> bool:
        """A queued job of an image that cannot be served: its device must not download.
        The image is read only for a queued job (most reports come from other states)."""
        if job["state"] != JobState.QUEUED:
            return False
        return (image if image is not None else self._image_of_job(job))["problem"] is not None

    def _image_of_job(self, job: Any) -> Any:
        return self.store.image(self.store.campaign(job["campaign"])["image"])

    # ---- devices ------------------------------------------------------------------------
    def enrol(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise Refused("bad_request", "body must be a CBOR map")
        device_id = check_id(body.get("id"), "id")
        cls = check_id(body.get("class"), "class")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Refused("bad_request", "tags must be a list of text strings")
        with self.store.transaction():
            old = self.store.device(device_id)
            if old is None:
                self.store.add_enrolled_device(device_id, cls, tags_json(tags))
                self.store.event("enrolled", f"class {cls}", device=device_id)
            else:
                self.store.enrol_device(device_id, cls, tags_json(tags))
                if not old["enrolled"] or old["class"] != cls:
                    self.store.event("enrolled", f"class {cls} (was seen as {old['class']})",
                                     device=device_id)
        return self.views.device_view(self.store.device(device_id))

    def set_tags(self, device_id: str, body: Any) -> dict[str, Any]:
        """Add and/or remove tags of a device (``{"add": [...], "remove": [...]}``)."""
        if not isinstance(body, Mapping) or not set(body) <= {"add", "remove"} or not body:
            raise Refused("bad_request", "body must be a map with add and/or remove tag lists")
        add = check_tags(body.get("add", []), "add")
        remove = set(check_tags(body.get("remove", []), "remove"))
        with self.store.transaction():
            row = self.store.device(device_id)
            if row is None:
                raise Refused("not_found", "unknown device")
            old = json.loads(row["tags"])
            new = [t for t in old if t not in remove]
            new += [t for t in dict.fromkeys(add) if t not in new]
            if len(new) > MAX_TAGS:
                raise Refused("bad_request", f"a device has at most {MAX_TAGS} tags")
            if new != old:
                self.store.set_device_tags(device_id, tags_json(new))
                self.store.event("tags", f"tags {', '.join(old) or '-'} -> "
                                 f"{', '.join(new) or '-'}", device=device_id)
        return self.views.device_view(self.store.device(device_id))

    # ---- campaigns ------------------------------------------------------------------------
    def create_campaign(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise Refused("bad_request", "body must be a CBOR map")
        s = self.store
        image = s.image(body.get("image")) if isinstance(body.get("image"), str) else None
        if image is None:
            raise Refused("not_found", "unknown image")
        timeout = body.get("timeout", DEFAULT_TIMEOUT)
        if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                or not 0 < timeout <= 10 * 365 * 86400):
            raise Refused("bad_request", "timeout must be a positive number of seconds")
        try:
            policy = rollout.Policy.from_body(body)
        except rollout.PolicyError as e:
            raise Refused("bad_request", str(e)) from None
        picks = [k for k in ("devices", "class", "tags", "all") if body.get(k) not in (None, False)]
        if not picks or len(picks) > 1 and set(picks) != {"class", "tags"}:
            raise Refused("bad_request", "give devices, or class and/or tags, or all")
        if "devices" in picks:
            ids = body["devices"]
            if not isinstance(ids, list) or not ids:
                raise Refused("bad_request", "devices must be a non-empty list of ids")
            rows = s.devices_by_ids(list({d for d in ids if isinstance(d, str)}))
            targets, seen = [], set()
            for d in ids:
                row = rows.get(d) if isinstance(d, str) else None
                if row is None:
                    raise Refused("not_found", f"unknown device {d!r}")
                if d not in seen:
                    seen.add(d)
                    targets.append(row)
        elif "class" in picks or "tags" in picks:
            targets = (s.devices_of_class(check_id(body["class"], "class"))
                       if "class" in picks else s.devices())
            if "tags" in picks:
                wanted = set(check_tags(body["tags"], "tags"))
                if not wanted:
                    raise Refused("bad_request", "tags must not be empty")
                targets = [t for t in targets if wanted <= set(json.loads(t["tags"]))]
        else:
            if body["all"] is not True:
                raise Refused("bad_request", "all must be true")
            targets = s.devices()
        if "devices" not in picks:
            # a seeded shuffle: the canary is a sample of the fleet (reproducible per image)
            random.Random(image["id"]).shuffle(targets)
        if not targets:
            raise Refused("bad_request", "no target device")
        wrong = [t["id"] for t in targets if t["class"] != image["class"]]
        if wrong:
            raise Refused("bad_request", f"image class {image['class']} does not match device(s) "
                          f"{', '.join(wrong[:5])}")
        ahead = self._already_current(targets, image)
        running = s.devices_with_job(JobState.ACTIVE)  # one statement, not one a target
        busy = [t["id"] for t in targets if t["id"] not in ahead and t["id"] in running]
        if busy:
            raise Refused("bad_request", f"device(s) {', '.join(busy[:5])} already in a running "
                          "campaign; cancel it first")
        now = self.clock()
        self._check_window(policy, now, now + timeout)
        self._check_blob(image)
        sizes = rollout.phase_sizes(policy, len(targets))
        phases = [k for k, size in enumerate(sizes) for _ in range(size)]
        with s.transaction():
            n = s.add_campaign(image["id"], CampaignState.RUNNING, now, now + timeout,
                               json.dumps(policy.to_json()))
            s.add_jobs((n, t["id"], JobState.SKIPPED if t["id"] in ahead else JobState.QUEUED,
                        image["size"], now, k) for t, k in zip(targets, phases))
            plan = "" if len(sizes) == 1 else f" in phases of {'+'.join(map(str, sizes))}"
            s.event("campaign", f"campaign {n}: image {image['id']} (seq {image['seq']}) to "
                    f"{len(targets)} device(s){plan}, timeout {timeout} s", campaign=n)
            for device_id, seq in ahead.items():
                s.event("job", f"skipped: already running seq {seq} (image seq {image['seq']})",
                        device=device_id, campaign=n)
        for t, k in zip(targets, phases):
            if k == 0 and t["id"] not in ahead:
                self.on_command_change(t["id"])
        return self.views.campaign_view(s.campaign(n))

    def cancel_campaign(self, n: int) -> dict[str, Any]:
        s = self.store
        now = self.clock()
        with s.transaction():
            camp = s.campaign(n)
            if camp is None:
                raise Refused("not_found", "unknown campaign")
            if camp["state"] != CampaignState.CANCELLED:
                s.set_campaign_state(n, CampaignState.CANCELLED, camp["reason"])
                s.event("campaign", f"campaign {n}: {camp['state']} -> cancelled", campaign=n)
                with self._refreshing_once():
                    for job in s.jobs_of_campaign(n):
                        # downloaded or updating: the agent installs without asking again; such
                        # a job stays active and records its outcome (the image is left alone)
                        if job["state"] in CANCELLABLE:
                            self._set_job(job, jobs.CANCEL, Result.CANCELLED, job["progress"],
                                          now, "campaign cancelled")
        return self.views.campaign_view(s.campaign(n))

    def expire(self, now: float | None = None) -> int:
        """Mark active jobs past their campaign deadline as timed out; returns how many."""
        s = self.store
        now = self.clock() if now is None else now
        camps = s.campaigns()
        # the join walks every active job: only when a campaign that may have some is past its
        # deadline (a done one has none), not every second of a 100,000-device campaign
        due = any(c["deadline"] < now and c["state"] != CampaignState.DONE for c in camps)
        rows = s.jobs_past_deadline(JobState.ACTIVE, now) if due else []
        if rows:
            with s.transaction(), self._refreshing_once():
                for job in rows:
                    self._set_job(job, jobs.DEADLINE, None, job["progress"], now,
                                  "campaign deadline passed")
        expired = len(rows) + self._expire_offers(now) + self._expire_self_registered(now)
        self._refresh_campaigns([c["id"] for c in camps if c["state"] == CampaignState.RUNNING],
                                now)
        return expired

    @contextlib.contextmanager
    def _refreshing_once(self) -> Iterator[None]:
        """Within: job changes refresh each campaign once, at the end (bulk changes)."""
        if self._deferred is not None:
            yield
            return
        self._deferred = set()
        try:
            yield
            for n in sorted(self._deferred):
                self._refresh_campaign(n)
        finally:
            self._deferred = None

    def _count_self_registered(self) -> int:
        return self.store.count_self_registered()

    def _expire_self_registered(self, now: float) -> int:
        """Delete self-registered devices nobody claimed and not heard from for auto_expiry
        (one event each); recount the quota."""
        if now < self._next_auto_sweep:
            return 0
        self._next_auto_sweep = now + AUTO_SWEEP_SECONDS
        s = self.store
        gone = s.unclaimed_devices(now - self.auto_expiry, 1000)
        if gone:
            with s.transaction():
                for device_id in gone:
                    s.delete_device(device_id)
                    s.event("expired", "self-registered, never enrolled, not heard from for "
                            f"{self.auto_expiry:g} s: forgotten", device=device_id)
        self._self_registered = self._count_self_registered()
        return len(gone)

    def _expire_offers(self, now: float) -> int:
        """Offers whose download never started go back to the queue (their slot frees)."""
        s = self.store
        stale = []
        for job in s.jobs_in_state_since(JobState.OFFERED, now - 1):
            timeout = self.policy(s.campaign(job["campaign"])).offer_timeout
            if now - job["updated"] >= timeout:
                stale.append((job, timeout))
        if stale:
            with s.transaction():
                for job, timeout in stale:
                    self._set_job(job, jobs.OFFER_EXPIRED, None, job["progress"], now,
                                  f"offer expired: no download within {timeout} s")
        return len(stale)

def _image_text(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """An image's human version label and release notes (optional text)."""
    label, notes = body.get("label"), body.get("notes")
    if label is not None and (not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL
                              or not label.isprintable()):
        raise Refused("bad_request", f"label must be printable text of 1-{MAX_LABEL} characters")
    if notes is not None and (not isinstance(notes, str) or len(notes) > MAX_NOTES):
        raise Refused("bad_request", f"notes must be text of at most {MAX_NOTES} characters")
    return label, notes


def _host(address: str | None) -> str | None:
    return None if address is None else address.rpartition(":")[0]

