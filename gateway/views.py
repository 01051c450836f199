"""The read side of the fleet: what the control API, the dashboard and ``cc`` show. Nothing here
writes; the job machine (``fleet.py``) returns these views after its changes too."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from proto import manifest as mf
from proto.codes import CampaignState, JobState, result_name, state_name
from proto.control import EVENTS_PAGE
from proto.keys import ManifestKey

from . import deltas, rollout, wrapped
from .requests import Refused, device_query
from .store import Store

JOBS_IN_VIEW = 1000  # jobs in one campaign view at most (those not succeeded first)


def device_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "class": row["class"], "seq": row["seq"],
            "state": state_name(row["state"]), "result": result_name(row["result"]),
            "progress": row["progress"], "last_seen": row["last_seen"],
            "address": row["address"], "enrolled": bool(row["enrolled"]),
            "tags": json.loads(row["tags"])}


def job_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "campaign": row["campaign"], "device": row["device"],
            "phase": row["phase"], "state": row["state"],
            "result": None if row["result"] is None else result_name(row["result"]),
            "progress": row["progress"], "size": row["sent_size"] or row["size"],
            "updated": row["updated"], "sent": deltas.kind(row["variant"])}


class Views:
    """Views over one store. ``policy`` is the fleet's (cached) campaign policy parser."""

    def __init__(self, store: Store, policy: Callable[[Any], rollout.Policy],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock

    device_view = staticmethod(device_view)
    job_view = staticmethod(job_view)

    def image_view(self, row: Any) -> dict[str, Any]:
        view = {"id": row["id"], "uri": row["uri"], "digest": row["digest"], "size": row["size"],
                "seq": row["seq"], "class": row["class"], "vendor": row["vendor"],
                "created": row["created"], "problem": row["problem"], "label": row["label"],
                "notes": row["notes"]}
        m = mf.parse(row["manifest"])
        if mf.encrypted(m):  # "digest": of the ciphertext the URI serves
            view["encrypted"] = True
            view["recipients"] = wrapped.count(self.store, row["id"])
            view["installed_digest"] = m[ManifestKey.DIGEST].hex()  # signed, not secret
            view["iv"] = m[ManifestKey.ENC_IV].hex()
        return view

    def device_views(self, query: tuple[str, ...] = ()) -> list[dict[str, Any]] | dict[str, Any]:
        """A page of devices (``offset``, ``limit`` ≤ DEVICES_PAGE, filters ``state``, ``class``,
        ``tag``, ``campaign``), or with ``summary`` how many match by state and class. One held
        up by a paused campaign carries that in "note"."""
        f, summary, offset, limit = device_query(query)
        if summary:
            got = self.store.device_summary(f)
            got["by_state"] = {state_name(k): v for k, v in got["by_state"].items()}
            return got
        rows = self.store.devices_page(f, offset, limit)
        held = {r["device"]: f"campaign {r['campaign']} paused: {r['reason']}"
                for r in self.store.held_devices(JobState.ACTIVE, CampaignState.PAUSED)} \
            if rows else {}
        return [{**device_view(r), "note": held.get(r["id"])} for r in rows]

    def device_detail(self, device_id: str) -> dict[str, Any]:
        row = self.store.device(device_id)
        if row is None:
            raise Refused("not_found", "unknown device")
        view = device_view(row)
        view["jobs"] = [job_view(j) for j in self.store.jobs_of_device(device_id)]
        view["events"] = self.store.device_events(device_id, EVENTS_PAGE)
        return view

    def campaign_view(self, row: Any, with_jobs: bool = False,
                      limit: int = JOBS_IN_VIEW) -> dict[str, Any]:
        """Counts per state and per phase (indexed GROUP BYs, never one row per job); with
        ``with_jobs`` also up to ``limit`` (at most JOBS_IN_VIEW) of its jobs."""
        counts = self.store.job_counts(row["id"])
        policy = self.policy(row)
        phases: list[dict[str, Any]] = []
        for phase, state, count in self.store.phase_counts(row["id"]):
            while len(phases) <= phase:
                k = len(phases)
                phases.append({"name": rollout.phase_name(k, policy), "total": 0, "counts": {},
                               "released": k <= row["released"]})
            phases[phase]["total"] += count
            phases[phase]["counts"][state] = count
        view = {"id": row["id"], "image": row["image"], "state": row["state"],
                "created": row["created"], "deadline": row["deadline"], "counts": counts,
                "total": sum(counts.values()), "policy": policy.to_json(),
                "phases": phases, "reason": row["reason"]}
        if policy.window is not None:
            now = self.clock()
            view["window_open"] = policy.window.is_open(now)
            view["window_next"] = policy.window.next_open(now)
        if with_jobs:  # bounded: those that did not succeed first ("total" counts them all)
            view["jobs"] = [job_view(j) for j in self.store.campaign_jobs(
                row["id"], min(limit, JOBS_IN_VIEW), JobState.SUCCEEDED)] if limit > 0 else []
        return view

    def events(self, since: float) -> list[dict[str, Any]]:
        return self.store.events_since(since, EVENTS_PAGE)
