"""What people see: rich tables and progress bars; what scripts see: JSON with the API's keys.

Tables and JSON go to stdout; progress bars go to stderr so ``--json`` output stays parseable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import rich.box

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from proto.codes import JobState

if TYPE_CHECKING:  # rich.progress is imported where bars are drawn (not by `cc status`)
    from rich.progress import Progress, TaskID

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
    JobState.SKIPPED: "cyan",
}


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no colour codes even on a terminal: scripts pipe it)."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def when(t: float | None) -> str:
    """Local time with its zone: '2026-11-29 14:03:07 CET' (a bare time is ambiguous)."""
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def size(n: int | None) -> str:
    return "-" if n is None else decimal(n)


def percent(done: int | None, total: int | None) -> str:
    if not total:
        return "-"
    return f"{100 * (done or 0) // total}%"


def esc(value: object) -> str:
    """Gateway or device text for a markup string: '[red]' from a device stays literal."""
    return escape(str(value))


def styled_state(state: str | None) -> str:
    state = esc(state or "-")
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def state_cell(state: str | None) -> Text:
    return Text(str(state or "-"), style=STATE_STYLE.get(str(state), ""))


@dataclass
class Listing:
    """Rows for people: a table on a terminal; plain text, one row per line, when piped.

    Cells are plain text (``Text`` for a style): nothing a device chose is read as markup.
    Columns in ``keep`` (ids) are never wrapped or cut; on a narrow terminal the columns in
    ``optional`` are dropped, first ones first, until the rest fits; what still does not fit
    folds."""

    title: str
    columns: list[str]
    rows: list[list[str | Text]] = field(default_factory=list)
    right: tuple[str, ...] = ()
    keep: tuple[str, ...] = ("id", "device", "image", "campaign")
    caption: str | None = None
    header: bool = True
    optional: tuple[str, ...] = ()

    def add(self, *cells: object) -> None:
        self.rows.append([c if isinstance(c, Text) else str(c) for c in cells])

    def _widths(self) -> dict[str, int]:
        return {col: max([len(col)] + [len(_plain(r[k])) for r in self.rows])
                for k, col in enumerate(self.columns)}

    def shown(self, width: int) -> list[str]:
        """The columns that fit in ``width`` (3 characters of border and padding each)."""
        widths = self._widths()
        cols = list(self.columns)
        for col in self.optional:
            if sum(widths[c] + 3 for c in cols) + 1 <= width:
                break
            if col in cols:
                cols.remove(col)
        return cols

    def table(self, width: int = 10**6) -> Table:
        t = Table(title=self.title, caption=self.caption, show_header=self.header,
                  box=rich.box.SQUARE if self.header else None)
        widths = self._widths()
        cols = self.shown(width)
        index = [self.columns.index(c) for c in cols]
        for col in cols:
            keep = col in self.keep
            t.add_column(col, justify="right" if col in self.right else "left",
                         no_wrap=keep, min_width=widths[col] if keep else None,
                         overflow="fold",
                         style="bold" if not self.header and not t.columns else None)
        for r in self.rows:
            t.add_row(*[r[k] if isinstance(r[k], Text) else Text(r[k]) for k in index])
        return t

    def lines(self) -> list[str]:
        rows = [[_plain(c) or "-" for c in r] for r in self.rows]
        head = ["\t".join(self.columns)] if self.header else []
        return head + ["\t".join(r) for r in rows]


def _plain(cell: str | Text) -> str:
    text = cell.plain if isinstance(cell, Text) else cell
    return " ".join(text.split())  # one row per line, whatever a device put in its id


def show(*parts: object) -> None:
    """Print listings and lines: rich on a terminal, plain text lines when piped (a listing's
    caption, "… and 19,980 more", then goes to stderr: stdout stays one row per line)."""
    for part in parts:
        if isinstance(part, Listing):
            if out.is_terminal:
                out.print(part.table(out.width))
            else:
                for line in part.lines():
                    print(line)
                if part.caption:
                    print(part.caption, file=sys.stderr)
        else:
            out.print(part)


def _some(rows: list[dict[str, Any]], key: str) -> bool:
    return any(r.get(key) for r in rows)


def images(rows: list[dict[str, Any]]) -> Listing:
    cols = ["id", "seq", "label", "class", "size", "digest", "created"]
    if _some(rows, "notes"):
        cols.append("notes")
    if _some(rows, "problem"):
        cols.append("problem")
    if _some(rows, "encrypted"):
        cols.append("encrypted")
    t = Listing("firmware images", cols, right=("seq", "size"),
                optional=("created", "notes", "digest", "size", "label"))
    for r in rows:
        cells: list[object] = [r.get("id"), r.get("seq"), r.get("label") or "-", r.get("class"),
                               size(r.get("size")), str(r.get("digest", ""))[:16] + "…",
                               when(r.get("created"))]
        if "notes" in cols:
            cells.append(first_line(r.get("notes")))
        if "problem" in cols:
            cells.append(Text(str(r.get("problem") or "-"),
                              style="red" if r.get("problem") else ""))
        if "encrypted" in cols:
            cells.append(f"yes ({r.get('recipients', 0)} keys)" if r.get("encrypted") else "-")
        t.add(*cells)
    return t


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return (lines[0] + (" …" if len(lines) > 1 else "")) if lines else "-"


def devices(rows: list[dict[str, Any]]) -> Listing:
    cols = ["id", "class", "seq", "state", "result", "progress", "last seen", "address",
            "enrolled", "tags"]
    if _some(rows, "note"):
        cols.append("note")
    t = Listing("devices", cols, right=("seq", "progress"),
                optional=("address", "last seen", "enrolled", "progress", "tags", "result"))
    for r in rows:
        cells: list[object] = [
            r.get("id"), r.get("class"), r.get("seq"), r.get("state"), r.get("result"),
            size(r.get("progress")), when(r.get("last_seen")), r.get("address") or "-",
            "yes" if r.get("enrolled") else Text("no", style="yellow"),
            ", ".join(r.get("tags") or []) or "-"]
        if "note" in cols:
            cells.append(Text(str(r.get("note") or "-"), style="yellow" if r.get("note") else ""))
        t.add(*cells)
    return t


def device(dev: dict[str, Any]) -> list[Listing]:
    info = Listing("", ["field", "value"], header=False, keep=("field",))
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
        info.add(key.replace("_", " "), value)
    return [info, job_table(dev.get("jobs") or [], title="jobs", by="campaign"),
            events(dev.get("events") or [])]


def campaigns(rows: list[dict[str, Any]]) -> Listing:
    cols = ["id", "image", "state", "jobs", "created", "deadline"]
    if _some(rows, "reason"):
        cols.append("reason")  # why a campaign paused (a corrupt blob, the error threshold)
    t = Listing("campaigns", cols, optional=("created", "deadline"))
    for r in rows:
        cells: list[object] = [r.get("id"), r.get("image"), state_cell(r.get("state")),
                               Text(counts(r, str)), when(r.get("created")),
                               when(r.get("deadline"))]
        if "reason" in cols:
            cells.append(r.get("reason") or "-")
        t.add(*cells)
    return t


def counts(camp: dict[str, Any], name: Callable[[str], str] = styled_state) -> str:
    """Job counts: '3 succeeded · 1 failed (of 4)', as markup (``name=str``: plain text)."""
    c = camp.get("counts") or {}
    parts = [f"{n} {name(state)}" for state, n in sorted(c.items()) if n]
    return f"{' · '.join(parts) or 'none'} (of {camp.get('total', 0)})"


def plan(camp: dict[str, Any]) -> str:
    """'200 device(s) in 5 phases: canary 10, wave 1 50, …' (or just the count)."""
    phases = camp.get("phases") or []
    total = f"{camp.get('total')} device(s)"
    skipped = (camp.get("counts") or {}).get(JobState.SKIPPED)
    if skipped:
        total += f" ({skipped} skipped: they already run this image's seq or a newer one)"
    if len(phases) <= 1:
        return total
    return f"{total} in {len(phases)} phases: " + ", ".join(
        f"{esc(p.get('name'))} {p.get('total')}" for p in phases)


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
    return esc(", ".join(parts) or "everyone at once")


def in_zone(t: float | None, tz: str | None) -> str:
    """``t`` in the window's own zone, with the zone name."""
    if t is None:
        return "never"
    try:
        return datetime.fromtimestamp(t, ZoneInfo(tz or "UTC")).strftime(
            f"%Y-%m-%d %H:%M:%S %Z ({tz or 'UTC'})")
    except (ZoneInfoNotFoundError, ValueError):
        return when(t)


def phases(camp: dict[str, Any]) -> Listing:
    t = Listing("phases", ["phase", "devices", "released", "jobs"], keep=("phase",))
    for p in camp.get("phases") or []:
        t.add(p.get("name"), p.get("total"), "yes" if p.get("released") else "no",
              counts({"counts": p.get("counts"), "total": p.get("total")}, str))
    return t


def campaign_detail(camp: dict[str, Any]) -> list[Any]:
    head = (f"campaign [bold]{esc(camp.get('id'))}[/]: image {esc(camp.get('image'))}, "
            f"{styled_state(camp.get('state'))}, {counts(camp)}, "
            f"deadline {when(camp.get('deadline'))}")
    parts: list[Any] = [head, f"policy: {policy_text(camp.get('policy') or {})}"]
    if camp.get("reason"):
        parts.append(f"[yellow]paused[/]: {esc(camp['reason'])}")
    if "window_open" in camp:
        tz = ((camp.get("policy") or {}).get("window") or {}).get("tz")
        parts.append("window: " + ("open" if camp["window_open"] else
                                   f"closed, opens {in_zone(camp.get('window_next'), tz)}"))
    if len(camp.get("phases") or []) > 1:
        parts.append(phases(camp))
    rows = campaign.jobs(camp)
    more = (camp.get("total") or 0) - len(rows)
    caption = (f"… and {more} more (succeeded ones last): `cc status {camp.get('id')} --jobs "
               f"1000`, `cc devices --campaign {camp.get('id')} --state …`" if more > 0 else None)
    parts.append(job_table(rows, title="jobs", by="device", caption=caption))
    return parts


def job_table(rows: list[dict[str, Any]], *, title: str, by: str,
              caption: str | None = None) -> Listing:
    """Jobs of a campaign (keyed by device) or of a device (keyed by campaign)."""
    t = Listing(title, [by, "state", "result", "progress", "size", "sent", "updated"],
                right=("progress", "size"), optional=("size", "sent", "updated"),
                caption=caption)
    for j in rows:
        t.add(j.get(by, j.get("id", "-")), state_cell(j.get("state")), j.get("result") or "-",
              percent(j.get("progress"), j.get("size")), size(j.get("size")),
              j.get("sent") or "-", when(j.get("updated")))
    return t


def variants(rows: list[dict[str, Any]]) -> Listing:
    """Compressed images and deltas (``cc firmware deltas``)."""
    t = Listing("compressed images and deltas",
                ["id", "image", "kind", "base", "sent", "signed", "created"],
                right=("sent",), optional=("created",))
    for r in rows:
        t.add(r.get("id"), r.get("image"), r.get("kind"), str(r.get("base") or "-")[:8],
              size(r.get("sent_size")), "yes" if r.get("signed") else "no", when(r.get("created")))
    return t


def failures(camp: dict[str, Any]) -> Listing:
    """The jobs that did not succeed (the first MAX_FAILURE_ROWS: a terminal, not a report)."""
    rows = campaign.failures(camp)
    total = campaign.not_ok(camp)  # of every job, not only those the answer carries
    if camp.get("state") == "paused":  # the unreleased queue is not a failure
        rows = [j for j in rows if j.get("state") != JobState.QUEUED]
        total -= campaign.counts(camp).get(JobState.QUEUED, 0)
    more = max(total, len(rows)) - min(len(rows), MAX_FAILURE_ROWS)
    caption = (f"… and {more} more: cc status {camp.get('id')} --json" if more > 0 else None)
    names = [p.get("name") for p in camp.get("phases") or []]
    cols = ["device", "phase", "state", "reason", "progress"]
    if len(names) <= 1:
        cols.remove("phase")  # one phase: no "wave 1" label
    t = Listing("jobs that did not succeed", cols, caption=caption)
    for j in rows[:MAX_FAILURE_ROWS]:
        state = j.get("state")
        shown = state_cell(state) if state in JobState.FINAL else Text.assemble(
            ("not finished", "red"), f" (still {state})")
        phase = j.get("phase")
        cells: list[object] = [j.get("device")]
        if "phase" in cols:
            cells.append(names[phase] if isinstance(phase, int) and phase < len(names) else "-")
        cells += [shown, j.get("result") or "-", percent(j.get("progress"), j.get("size"))]
        t.add(*cells)
    return t


def events(rows: list[dict[str, Any]]) -> Listing:
    t = Listing("events", ["time", "device", "campaign", "kind", "detail"],
                optional=("campaign",))
    for e in rows:
        t.add(when(e.get("time")), e.get("device") or "-", e.get("campaign") or "-",
              e.get("kind"), e.get("detail"))
    return t


def upload_progress() -> Progress:
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    return Progress(TextColumn("upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)


class CampaignProgress:
    """Live bars for a campaign: one per device for a few devices, else one overall bar."""

    def __init__(self, console: Console = err) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        # descriptions are device ids: never markup (the status column is ours, escaped)
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
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
        elif (camp.get("total") or 0) <= PER_DEVICE_BARS:
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
            status += f" ({esc(job['result'])})"
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
            self.progress.update(self.tasks["reason"], description="paused",
                                 status=f"[yellow]{esc(camp['reason'])}[/]")

    def _overall_bar(self, camp: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        c = campaign.counts(camp)
        final = sum(n for s, n in c.items() if s in JobState.FINAL)
        total = max(int(camp.get("total") or 0), 1)
        if "all" not in self.tasks:
            self.tasks["all"] = self.progress.add_task(f"campaign {camp.get('id')}",
                                                       total=total, status="", amount="")
        self.progress.update(self.tasks["all"], total=total, completed=final,
                             status=counts(camp), amount=f"{final}/{total} done")
