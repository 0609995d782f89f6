"""route and parallel in virtual time: where events go, how they come back together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from streamflow.errors import ConfigError, Unavailable
from streamflow.events import Event, StepRecord
from streamflow.ops import Operator, map_async, parallel, route
from streamflow.testing.marbles import run_marbles

pytestmark = pytest.mark.looptime


def tagging(tag: str, delay: float = 1.0, seen: list[str] | None = None) -> Operator:
    """A map_async step that sleeps ``delay`` and records ``tag`` in the payload."""

    async def step(event: Event) -> Event:
        if seen is not None:
            seen.append(event.id)
        await asyncio.sleep(delay)
        return event.with_payload({**event.payload, tag: f"{tag}:{event.id}"})

    return map_async(step, concurrency=4, name=tag)


def kind_of(event: Event) -> str:
    return str(event.payload["kind"])


TICKETS = {
    "a": {"kind": "billing"},
    "b": {"kind": "bug"},
    "c": {"kind": "billing"},
    "d": {"kind": "praise"},
}


# -- route ---------------------------------------------------------------------


async def test_route_sends_each_event_down_its_labelled_branch() -> None:
    billing: list[str] = []
    bug: list[str] = []
    op = route(
        kind_of, {"billing": tagging("billing", seen=billing), "bug": tagging("bug", seen=bug)}
    )

    result = await run_marbles(op, "a-b-c|", values=TICKETS)

    assert billing == ["a", "c"]
    assert bug == ["b"]
    by_id = {e.id: e for e in result.events}
    assert by_id["a"].payload["billing"] == "billing:a"
    assert "bug" not in by_id["a"].payload
    assert by_id["b"].payload["bug"] == "bug:b"
    assert [r.step for r in by_id["c"].trace] == ["billing"]
    assert result.pairs == [(1.0, "a"), (3.0, "b"), (5.0, "c")]


async def test_route_unknown_label_fails_the_event_naming_the_label() -> None:
    op = route(kind_of, {"billing": tagging("billing"), "bug": tagging("bug")}, name="triage")

    result = await run_marbles(op, "a-d|", values=TICKETS)

    by_id = {e.id: e for e in result.events}
    assert by_id["a"].outcome == "ok"
    failed = by_id["d"]
    assert failed.outcome == "failed"
    assert failed.error is not None
    assert failed.error.step == "triage"
    assert failed.error.type == "StepFailed"
    assert "'praise'" in failed.error.message
    assert result.completed_at == 3.0


async def test_route_unknown_label_goes_to_the_default_branch() -> None:
    other: list[str] = []
    op = route(
        kind_of,
        {"billing": tagging("billing"), "other": tagging("other", seen=other)},
        default="other",
    )

    result = await run_marbles(op, "(abd)|", values=TICKETS)

    assert other == ["b", "d"]
    assert all(e.outcome == "ok" for e in result.events)
    assert sorted(result.ids) == ["a", "b", "d"]


async def test_route_selector_raising_fails_the_event_not_the_stream() -> None:
    op = route(kind_of, {"billing": tagging("billing")})
    values = {**TICKETS, "x": {"text": "no kind here"}}

    result = await run_marbles(op, "x-a|", values=values)

    by_id = {e.id: e for e in result.events}
    assert by_id["x"].outcome == "failed"
    assert by_id["x"].error is not None
    assert (by_id["x"].error.type, by_id["x"].error.step) == ("KeyError", "route")
    assert by_id["a"].outcome == "ok"
    assert result.error is None


async def test_route_completes_only_after_every_branch_completes() -> None:
    op = route(kind_of, {"billing": tagging("billing", delay=5), "bug": tagging("bug", delay=1)})

    result = await run_marbles(op, "ab|", values=TICKETS)

    # Upstream ends at 2, the bug branch at 2, the slow billing branch at 5.
    assert result.pairs == [(2.0, "b"), (5.0, "a")]
    assert result.completed_at == 5.0


async def test_route_lets_inactive_events_bypass_the_branches() -> None:
    seen: list[str] = []
    values = {"f": Event(id="f", payload={"kind": "billing"}, outcome="filtered")}
    op = route(kind_of, {"billing": tagging("billing", seen=seen)})

    result = await run_marbles(op, "f|", values=values)

    assert seen == []
    assert result.events[0].outcome == "filtered"


def test_route_default_must_be_a_branch() -> None:
    with pytest.raises(ConfigError, match="default 'other'"):
        route(kind_of, {"billing": tagging("billing")}, default="other")


# -- parallel ------------------------------------------------------------------


async def test_parallel_every_branch_sees_each_event_and_one_event_comes_out_per_input() -> None:
    left_seen: list[str] = []
    right_seen: list[str] = []
    op = parallel(
        {
            "retrieve": tagging("retrieve", delay=2, seen=left_seen),
            "classify": tagging("classify", delay=1, seen=right_seen),
        }
    )
    values = {c: {"text": c} for c in "abcd"}

    result = await run_marbles(op, "ab-cd|", values=values)

    assert left_seen == right_seen == ["a", "b", "c", "d"]
    assert sorted(result.ids) == ["a", "b", "c", "d"]
    # Each merged event waits for its slower branch.
    assert result.pairs == [(2.0, "a"), (3.0, "b"), (5.0, "c"), (6.0, "d")]


async def test_parallel_default_merge_puts_each_branch_payload_under_its_name() -> None:
    op = parallel({"left": tagging("left"), "right": tagging("right", delay=3)})

    result = await run_marbles(op, "a|", values={"a": {"text": "hi"}})

    (event,) = result.events
    assert event.payload["text"] == "hi"
    assert event.payload["left"] == {"text": "hi", "left": "left:a"}
    assert event.payload["right"] == {"text": "hi", "right": "right:a"}
    assert event.outcome == "ok"


async def test_parallel_merged_trace_holds_the_records_of_both_branches() -> None:
    op = parallel({"left": tagging("left", delay=2), "right": tagging("right", delay=1)})
    before = Event(id="a", payload={"text": "hi"}).traced(
        StepRecord(step="ingest", started_at=0.0, duration_s=0.0)
    )

    result = await run_marbles(op, "a|", values={"a": before})

    (event,) = result.events
    assert event.trace[0].step == "ingest"
    assert sorted(r.step for r in event.trace[1:]) == ["left", "right"]
    durations = {r.step: r.duration_s for r in event.trace}
    assert durations["left"] == pytest.approx(2.0)
    assert durations["right"] == pytest.approx(1.0)
    assert event.attempts == 2


async def test_parallel_custom_merge_builds_the_payload() -> None:
    def merge(original: Event, results: Mapping[str, Event]) -> Any:
        return {"joined": sorted(results[name].payload[name] for name in results)}

    op = parallel({"x": tagging("x"), "y": tagging("y")}, merge=merge)

    result = await run_marbles(op, "a|", values={"a": {}})

    assert result.events[0].payload == {"joined": ["x:a", "y:a"]}


async def test_parallel_failing_branch_fails_the_merged_event() -> None:
    async def flaky(event: Event) -> Event:
        await asyncio.sleep(1)
        if event.id == "b":
            raise Unavailable("index offline")
        return event

    op = parallel({"ok": tagging("ok", delay=2), "check": map_async(flaky, name="check")})

    result = await run_marbles(op, "a-b-c|", values={c: {"text": c} for c in "abc"})

    assert [e.id for e in result.events] == ["a", "b", "c"]
    by_id = {e.id: e for e in result.events}
    failed = by_id["b"]
    assert failed.outcome == "failed"
    assert failed.error is not None
    assert (failed.error.type, failed.error.step) == ("Unavailable", "check")
    assert {r.step for r in failed.trace} == {"ok", "check"}
    assert by_id["a"].outcome == by_id["c"].outcome == "ok"
    assert result.completed_at == 6.0


async def test_parallel_merge_raising_fails_the_event() -> None:
    def merge(original: Event, results: Mapping[str, Event]) -> Any:
        raise ValueError("cannot join")

    op = parallel({"x": tagging("x")}, merge=merge, name="fanout")

    result = await run_marbles(op, "a|", values={"a": {}})

    error = result.events[0].error
    assert error is not None
    assert (error.type, error.step, error.message) == ("ValueError", "fanout", "cannot join")


async def test_parallel_inside_route_keeps_one_event_per_input() -> None:
    inner = parallel({"left": tagging("left", delay=1), "right": tagging("right", delay=2)})
    op = route(kind_of, {"billing": inner, "bug": tagging("bug")})

    result = await run_marbles(op, "(abc)-d|", values=TICKETS, tick=1.0)

    assert sorted(result.ids) == ["a", "b", "c", "d"]
    by_id = {e.id: e for e in result.events}
    assert by_id["d"].outcome == "failed"
    assert set(by_id["a"].payload) == {"kind", "left", "right"}


def test_the_default_merge_names_the_fix_when_the_payload_is_not_an_object() -> None:
    from streamflow.errors import StepFailed
    from streamflow.ops import merge_into_dict

    results = {"up": Event(id="e", payload="HELLO")}
    with pytest.raises(StepFailed, match=r"payload is a str; pass merge="):
        merge_into_dict(Event(id="e", payload="hello"), results)
    assert merge_into_dict(Event(id="e", payload=None), results) == {"up": "HELLO"}
    assert merge_into_dict(Event(id="e", payload={"a": 1}), results) == {"a": 1, "up": "HELLO"}
