"""What people see: rich tables and progress bars; what scripts see: JSON with the API's keys.

Tables and JSON go to stdout; progress bars go to stderr so ``--json`` output stays parseable.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from proto.codes import JobState

from . import campaign

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)  # bars only on a terminal: logs get the tables

PER_DEVICE_BARS = 10  # more jobs than this: one overall bar and counts
MAX_FAILURE_ROWS = 25
STATE_STYLE = {
    "paused": "yellow",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "yellow",
    JobState.TIMED_OUT: "red",
}


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no colour codes even on a terminal: scripts pipe it)."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def when(t: float | None) -> str:
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def size(n: int | None) -> str:
    return "-" if n is None else decimal(n)


def percent(done: int | None, total: int | None) -> str:
    if not total:
        return "-"
    return f"{100 * (done or 0) // total}%"


def styled_state(state: str | None) -> str:
    state = state or "-"
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def images(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="firmware images")
    for col in ("id", "seq", "class", "vendor", "size", "digest", "created"):
        t.add_column(col, justify="right" if col in ("seq", "size") else "left")
    for r in rows:
        t.add_row(str(r.get("id")), str(r.get("seq")), str(r.get("class")), str(r.get("vendor")),
                  size(r.get("size")), str(r.get("digest", ""))[:16] + "…",
                  when(r.get("created")))
    return t


def devices(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="devices")
    for col in ("id", "class", "seq", "state", "result", "progress", "last seen", "address",
                "enrolled", "tags"):
        t.add_column(col, justify="right" if col in ("seq", "progress") else "left")
    for r in rows:
        t.add_row(str(r.get("id")), str(r.get("class")), str(r.get("seq")),
                  str(r.get("state")), str(r.get("result")), size(r.get("progress")),
                  when(r.get("last_seen")), str(r.get("address") or "-"),
                  "yes" if r.get("enrolled") else "[yellow]no[/]",
                  ", ".join(r.get("tags") or []))
    return t


def device(dev: dict[str, Any]) -> list[Table]:
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for key in ("id", "class", "seq", "state", "result", "progress", "last_seen", "address",
                "enrolled", "tags"):
        value = dev.get(key)
        if key == "last_seen":
            value = when(value)
        elif key == "tags":
            value = ", ".join(value or []) or "-"
        elif key == "address":
            value = value or "-"
        elif key == "enrolled":
            value = "yes" if value else "no (reported without being added)"
        info.add_row(key.replace("_", " "), str(value))
    return [info, job_table(dev.get("jobs") or [], title="jobs", by="campaign"),
            events(dev.get("events") or [])]


def campaigns(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="campaigns")
    for col in ("id", "image", "state", "jobs", "created", "deadline"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r.get("id")), str(r.get("image")), styled_state(r.get("state")),
                  counts(r), when(r.get("created")), when(r.get("deadline")))
    return t


def counts(camp: dict[str, Any]) -> str:
    c = camp.get("counts") or {}
    parts = [f"{n} {styled_state(state)}" for state, n in sorted(c.items()) if n]
    return f"{' · '.join(parts) or 'none'} (of {camp.get('total', 0)})"


def plan(camp: dict[str, Any]) -> str:
    """'200 device(s) in 5 phases: canary 10, wave 1 50, …' (or just the count)."""
    phases = camp.get("phases") or []
    total = f"{camp.get('total')} device(s)"
    if len(phases) <= 1:
        return total
    return f"{total} in {len(phases)} phases: " + ", ".join(
        f"{p.get('name')} {p.get('total')}" for p in phases)


def policy_text(policy: dict[str, Any]) -> str:
    parts = []
    for key, label in (("canary", "canary"), ("wave", "wave"), ("success_rate", "success rate"),
                       ("max_failures", "max failures"), ("max_downloads", "max downloads")):
        v = policy.get(key)
        if v not in (None, 0):
            shown = f"{v:g}%" if key == "success_rate" and isinstance(v, (int, float)) else v
            parts.append(f"{label} {shown}")
    w = policy.get("window")
    if w:
        parts.append(f"window '{w.get('start')}' for {w.get('duration')} s ({w.get('tz')})")
    return ", ".join(parts) or "everyone at once"


def phases(camp: dict[str, Any]) -> Table:
    t = Table(title="phases")
    for col in ("phase", "devices", "released", "jobs"):
        t.add_column(col)
    for p in camp.get("phases") or []:
        t.add_row(str(p.get("name")), str(p.get("total")), "yes" if p.get("released") else "no",
                  counts({"counts": p.get("counts"), "total": p.get("total")}))
    return t


def campaign_detail(camp: dict[str, Any]) -> list[Any]:
    head = (f"campaign [bold]{camp.get('id')}[/]: image {camp.get('image')}, "
            f"{styled_state(camp.get('state'))}, {counts(camp)}, "
            f"deadline {when(camp.get('deadline'))}")
    parts: list[Any] = [head, f"policy: {policy_text(camp.get('policy') or {})}"]
    if camp.get("reason"):
        parts.append(f"[yellow]paused[/]: {camp['reason']}")
    if "window_open" in camp:
        parts.append("window: " + ("open" if camp["window_open"] else
                                   f"closed, opens {when(camp.get('window_next'))}"))
    if len(camp.get("phases") or []) > 1:
        parts.append(phases(camp))
    parts.append(job_table(campaign.jobs(camp), title="jobs", by="device"))
    return parts


def job_table(rows: list[dict[str, Any]], *, title: str, by: str) -> Table:
    """Jobs of a campaign (keyed by device) or of a device (keyed by campaign)."""
    t = Table(title=title)
    for col in (by, "state", "result", "progress", "size", "updated"):
        t.add_column(col, justify="right" if col in ("progress", "size") else "left")
    for j in rows:
        t.add_row(str(j.get(by, j.get("id", "-"))), styled_state(j.get("state")),
                  str(j.get("result") or "-"), percent(j.get("progress"), j.get("size")),
                  size(j.get("size")), when(j.get("updated")))
    return t


def failures(camp: dict[str, Any]) -> Table:
    """The jobs that did not succeed (the first MAX_FAILURE_ROWS: a terminal, not a report)."""
    rows = campaign.failures(camp)
    if camp.get("state") == "paused":  # the unreleased queue is not a failure
        rows = [j for j in rows if j.get("state") != JobState.QUEUED]
    more = len(rows) - MAX_FAILURE_ROWS
    caption = (f"… and {more} more: cc status {camp.get('id')} --json" if more > 0 else None)
    t = Table(title="jobs that did not succeed", title_style="bold red", caption=caption)
    for col in ("device", "phase", "state", "reason", "progress"):
        t.add_column(col)
    names = [p.get("name") for p in camp.get("phases") or []]
    for j in rows[:MAX_FAILURE_ROWS]:
        state = j.get("state")
        shown = styled_state(state) if state in JobState.FINAL else (
            f"[red]not finished[/] (still {state})")
        phase = j.get("phase")
        phase_name = names[phase] if isinstance(phase, int) and phase < len(names) else "-"
        t.add_row(str(j.get("device")), str(phase_name), shown, str(j.get("result") or "-"),
                  percent(j.get("progress"), j.get("size")))
    return t


def events(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="events")
    for col in ("time", "device", "campaign", "kind", "detail"):
        t.add_column(col)
    for e in rows:
        t.add_row(when(e.get("time")), str(e.get("device") or "-"),
                  str(e.get("campaign") or "-"), str(e.get("kind")), str(e.get("detail")))
    return t


def upload_progress() -> Progress:
    return Progress(TextColumn("upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)


class CampaignProgress:
    """Live bars for a campaign: one per device for a few devices, else one overall bar."""

    def __init__(self, console: Console = err) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[amount]}"),
                                 TextColumn("{task.fields[status]}"), console=console,
                                 disable=not console.is_terminal)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> CampaignProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, camp: dict[str, Any]) -> None:
        rows = campaign.jobs(camp)
        if len(camp.get("phases") or []) > 1:
            self._phase_bars(camp)
        elif len(rows) <= PER_DEVICE_BARS:
            for j in rows:
                self._device_bar(j)
        else:
            self._overall_bar(camp, rows)

    def _device_bar(self, job: dict[str, Any]) -> None:
        name = str(job.get("device"))
        total = max(int(job.get("size") or 0), 1)
        state = job.get("state")
        done = int(job.get("progress") or 0)
        if state in (JobState.DOWNLOADED, JobState.UPDATING, JobState.SUCCEEDED):
            done = total  # the image is all there; what is left is installing
        status = styled_state(state)
        if job.get("result") and state in JobState.FINAL:
            status += f" ({job['result']})"
        done = min(done, total)
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, status="", amount="")
        self.progress.update(self.tasks[name], total=total, completed=done, status=status,
                             amount=f"{size(done)} of {size(total)}")

    def _phase_bars(self, camp: dict[str, Any]) -> None:
        """One bar per phase: final jobs of its total; the status says released or waiting."""
        for k, p in enumerate(camp.get("phases") or []):
            total = max(int(p.get("total") or 0), 1)
            c = p.get("counts") or {}
            final = sum(n for state, n in c.items() if state in JobState.FINAL)
            key = f"phase {k}"
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(str(p.get("name")), total=total,
                                                         status="", amount="")
            status = counts({"counts": c, "total": p.get("total")}) if p.get("released") \
                else "[dim]waiting[/]"
            self.progress.update(self.tasks[key], total=total, completed=final, status=status,
                                 amount=f"{final}/{total}")
        if camp.get("reason"):
            if "reason" not in self.tasks:
                self.tasks["reason"] = self.progress.add_task("", total=None, status="",
                                                              amount="")
            self.progress.update(self.tasks["reason"], description="[yellow]paused[/]",
                                 status=str(camp["reason"]))

    def _overall_bar(self, camp: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        final = sum(1 for j in rows if j.get("state") in JobState.FINAL)
        if "all" not in self.tasks:
            self.tasks["all"] = self.progress.add_task(f"campaign {camp.get('id')}",
                                                       total=len(rows), status="", amount="")
        self.progress.update(self.tasks["all"], total=len(rows), completed=final,
                             status=counts(camp), amount=f"{final}/{len(rows)} done")
