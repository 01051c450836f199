"""What the operator sees while waiting: the progress bars, drawn on a recording terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from cc import campaign, render
from proto.codes import JobState


def job(device: str, state: str, progress: int, size: int = 1000, result: str | None = None):
    return {"id": 1, "campaign": 3, "device": device, "state": state, "result": result,
            "progress": progress, "size": size, "updated": 0.0}


def camp(jobs: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    return {"id": 3, "image": "abcd1234", "state": "running", "created": 0.0, "deadline": 60.0,
            "counts": counts, "total": len(jobs), "jobs": jobs}


def terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=120, color_system=None), buf


def test_one_bar_per_device_follows_bytes_and_states():
    console, buf = terminal()
    with render.CampaignProgress(console) as bars:
        bars.update(camp([job("a", JobState.DOWNLOADING, 250), job("b", JobState.QUEUED, 0)]))
        tasks = {t.description: t for t in bars.progress.tasks}
        assert (tasks["a"].completed, tasks["a"].total) == (250, 1000)
        assert tasks["b"].completed == 0
        # Downloaded means the bytes are all there, whatever progress the device last sent.
        bars.update(camp([job("a", JobState.SUCCEEDED, 250, result="success"),
                          job("b", JobState.FAILED, 600, result="signature_invalid")]))
        tasks = {t.description: t for t in bars.progress.tasks}
        assert tasks["a"].completed == 1000 and tasks["b"].completed == 600
        assert "signature_invalid" in tasks["b"].fields["status"]
    assert "signature_invalid" in buf.getvalue()


def test_many_devices_share_one_bar_with_counts():
    console, buf = terminal()
    jobs = [job(f"d{i}", JobState.SUCCEEDED if i < 5 else JobState.DOWNLOADING, 10)
            for i in range(render.PER_DEVICE_BARS + 2)]
    with render.CampaignProgress(console) as bars:
        bars.update(camp(jobs))
        [task] = bars.progress.tasks
        assert (task.completed, task.total) == (5, len(jobs))
    text = buf.getvalue()
    assert "5 succeeded" in text and "7 downloading" in text


def test_failure_table_names_results_and_unfinished_jobs():
    c = camp([job("ok", JobState.SUCCEEDED, 1000, result="success"),
              job("bad", JobState.FAILED, 1000, result="rolled_back"),
              job("late", JobState.DOWNLOADING, 10)])
    assert not campaign.succeeded(c) and not campaign.finished(c)
    console, buf = terminal()
    console.print(render.failures(c))
    text = buf.getvalue()
    assert "rolled_back" in text and "still downloading" in text
    assert not re.search(r"\bok\b", text)


def device_row(device_id: str, **over) -> dict:
    row = {"id": device_id, "class": "esp32", "seq": 1, "state": "idle", "result": "initial",
           "progress": 0, "last_seen": 0.0, "address": "127.0.0.1:5000", "enrolled": True,
           "tags": []}
    return {**row, **over}


def test_device_strings_are_never_markup_and_ids_survive_80_columns():
    long_id = "greenhouse-sensor-" + "7" * 22  # 40 characters
    rows = [device_row(long_id, **{"class": "[red]e", "tags": ["[bold]t"]}),
            device_row("[blink]x", note="[i]why")]
    for width in (80, 200):
        console = Console(file=io.StringIO(), force_terminal=True, width=width,
                          color_system=None)
        console.print(render.devices(rows).table(width))
        text = console.file.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        assert long_id in text and "[red]e" in text and "[blink]x" in text and "[i]why" in text
    assert "[bold]t" in text and "127.0.0.1:5000" in text  # all columns on a wide terminal
    # piped: one plain line per row, the header first, nothing cut
    lines = render.devices(rows).lines()
    assert len(lines) == 3 and lines[0].startswith("id\tclass\t")
    assert lines[1].split("\t")[:2] == [long_id, "[red]e"]
    # live bars: a device id is a description, not markup
    console, buf = terminal()
    with render.CampaignProgress(console) as bars:
        bars.update(camp([job("[red]d[/red]", JobState.DOWNLOADING, 10)]))
    assert "[red]d[/red]" in buf.getvalue()
