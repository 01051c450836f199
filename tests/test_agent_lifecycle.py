"""The lifecycle table is the single source: docs/device.md embeds it, and it is whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from device import const, lifecycle
from proto.codes import Result, State

DOC = Path(__file__).resolve().parent.parent / "docs" / "device.md"
STATES = {int(s): s.name.lower() for s in State}


def transitions() -> dict[tuple[int, int], int]:
    """lifecycle.TABLE as (state, event) -> next state (its keys are state << 5 | event)."""
    return {(k >> 5, k & 31): n for k, n in lifecycle.TABLE.items()}


def render() -> str:
    """lifecycle.TABLE as the Markdown docs/device.md embeds (print(render()) to regenerate)."""
    out = ["| state | event | next state | result reported |", "| --- | --- | --- | --- |"]
    names = {getattr(const, k): k[4:].lower() for k in dir(const) if k.startswith("RES_")}
    for (s, e), n in transitions().items():
        r = lifecycle.RESULTS.get(e)
        if r is not None:
            rs = names[r]
        elif e == lifecycle.REFUSE:
            rs = "the refusal (signature_invalid, wrong_class, downgrade_refused, ...)"
        elif e == lifecycle.FAIL:
            rs = "invalid_uri or no_space"
        else:
            rs = "unchanged"
        out.append(f"| {STATES[s]} | {lifecycle.event_name(e)} | {STATES[n]} | {rs} |")
    return "\n".join(out) + "\n"


def test_docs_embed_the_table() -> None:
    text = DOC.read_text()
    begin, end = "<!-- lifecycle:begin -->\n", "<!-- lifecycle:end -->"
    assert text[text.index(begin) + len(begin):text.index(end)] == render()


def test_states_are_the_contracts() -> None:
    assert {lifecycle.IDLE, lifecycle.DOWNLOADING, lifecycle.DOWNLOADED, lifecycle.UPDATING} == \
        {int(s) for s in State}
    assert set(lifecycle.RESULTS.values()) <= {int(r) for r in Result}


def test_every_state_is_reachable_from_idle_and_returns_to_it() -> None:
    edges: dict[int, set[int]] = {}
    for (s, _), n in transitions().items():
        edges.setdefault(s, set()).add(n)

    def reach(start: int) -> set[int]:
        seen, todo = {start}, [start]
        while todo:
            for n in edges.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    assert reach(lifecycle.IDLE) == set(STATES)
    for s in STATES:
        assert lifecycle.IDLE in reach(s)


def test_events_are_distinct_and_never_a_state() -> None:
    events = {k: v for k, v in vars(lifecycle).items() if k.isupper() and type(v) is int
              and v not in STATES}
    assert len(set(events.values())) == len(events) == 13
    assert all(16 <= v < 32 and lifecycle.event_name(v) == k.lower() for k, v in events.items())


def test_a_missing_transition_is_an_error_not_a_no_op() -> None:
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.step(lifecycle.IDLE, lifecycle.CONFIRM)
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.step(lifecycle.UPDATING, lifecycle.BLOCK)


def test_the_agent_computes_the_contracts_ids_and_default_vendor() -> None:
    from device import offer
    from proto import manifest

    assert offer.DEFAULT_VENDOR == manifest.DEFAULT_VENDOR
    assert offer.ids("acme.example", "esp32-s3") == (
        manifest.vendor_id("acme.example"), manifest.class_id("acme.example", "esp32-s3"))
