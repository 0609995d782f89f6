"""One execution path: every operator is written per event, reactivex forms are derived."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import reactivex
from reactivex import operators as rx_ops

from streamflow import Event, Pipeline, Stage
from streamflow.ops import (
    Operator,
    as_operator,
    batch_async,
    filter,
    map_async,
    parallel,
    rate_limit,
    route,
    tap,
)
from streamflow.runtime import run_flow
from streamflow.runtime._lanes import LaneEngine
from streamflow.runtime._pipeline import StageHooks
from streamflow.transports import IterableSource, JsonlSink


def _lines(n: int, keys: int = 4) -> list[bytes]:
    return [f'{{"id":"t{i}","customer":"c{i % keys}"}}'.encode() for i in range(n)]


class _Sink(JsonlSink):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.events: list[Event] = []

    def write(self, event: Event) -> None:
        self.events.append(event)
        super().write(event)


async def _jitter(event: Event) -> Event:
    # Later events often finish first, so order must be restored, not inherited.
    await asyncio.sleep(random.Random(event.id).choice([0.0, 0.001, 0.003]))
    return event


async def _same(event: Event) -> Event:
    return event


async def _batch(events: list[Event]) -> Sequence[Event]:
    await asyncio.sleep(0)
    return [e.with_payload({**e.payload, "batched": len(events)}) for e in events]


def _builtins() -> dict[str, Operator]:
    return {
        "map_async": map_async(_same),
        "map_async ordered": map_async(_same, ordered=True),
        "map_async by key": map_async(_same, ordered="key"),
        "batch_async": batch_async(_batch, max_size=4, max_wait=0.01),
        "parallel": parallel({"a": map_async(_same), "b": map_async(_same)}),
        "route": route(lambda e: "a", {"a": map_async(_same)}),
        "filter": filter(lambda e: True),
        "tap": tap(lambda e: None),
        "rate_limit": rate_limit(requests_per_s=1000),
    }


@pytest.mark.parametrize("name", list(_builtins()))
def test_every_builtin_operator_has_a_per_event_form(name: str) -> None:
    op = _builtins()[name]
    assert op.lane is not None, f"{name} has no per-event form"


async def test_ordered_map_async_keeps_input_order_when_run_per_event(tmp_path: Path) -> None:
    pipeline = Pipeline(
        "ordered", [Stage("s", map_async(_jitter, concurrency=8, ordered=True))], window=32
    )
    sink = _Sink(tmp_path / "o.jsonl")

    await run_flow(pipeline, IterableSource(_lines(120)), sink)

    assert [e.id for e in sink.events] == [f"t{i}" for i in range(120)]


async def test_key_ordered_map_async_keeps_order_per_key_and_one_call_per_key(
    tmp_path: Path,
) -> None:
    running: dict[str | None, int] = {}
    overlap: list[str | None] = []

    async def one_at_a_time(event: Event) -> Event:
        running[event.key] = running.get(event.key, 0) + 1
        if running[event.key] > 1:
            overlap.append(event.key)
        await _jitter(event)
        running[event.key] -= 1
        return event

    pipeline = Pipeline(
        "keyed",
        [Stage("s", map_async(one_at_a_time, concurrency=8, ordered="key"))],
        key_field="customer",
        window=32,
    )
    sink = _Sink(tmp_path / "o.jsonl")

    await run_flow(pipeline, IterableSource(_lines(120)), sink)

    assert not overlap
    for key in ("c0", "c1", "c2", "c3"):
        ids = [int(e.id[1:]) for e in sink.events if e.key == key]
        assert ids == sorted(ids) and len(ids) == 30
    # Keys interleave: per-key order is all it promises, and it still runs keys in parallel.
    assert [e.id for e in sink.events] != [f"t{i}" for i in range(120)]


async def test_every_streamflow_operator_composes_with_reactivex_pipe() -> None:
    seen: list[str] = []
    events = [Event(id=f"e{i}", key=f"k{i % 3}", payload={"n": i}) for i in range(40)]
    chain = reactivex.from_iterable(events).pipe(
        map_async(_jitter, concurrency=4, ordered=True),
        map_async(_jitter, concurrency=4, ordered="key"),
        batch_async(_batch, max_size=8, max_wait=0.01),
        parallel({"left": map_async(_same), "right": map_async(_same)}),
        route(lambda e: "even" if e.payload["n"] % 2 == 0 else "odd", _branches()),
        filter(lambda e: e.payload["n"] != 7),
        tap(lambda e: seen.append(e.id)),
        rx_ops.to_list(),
    )

    out: list[Event] = await chain

    assert sorted(e.id for e in out) == sorted(e.id for e in events)
    assert sorted(seen) == sorted(e.id for e in events)
    by_id = {e.id: e for e in out}
    assert by_id["e7"].outcome == "filtered"
    assert by_id["e4"].payload["branch"] == "even"
    assert set(by_id["e4"].payload) >= {"n", "batched", "left", "right"}


def _branches() -> dict[str, Operator]:
    async def mark(event: Event) -> Event:
        return event.with_payload({**event.payload, "branch": "even"})

    # A user's own 1:1 reactivex operator works as a branch too.
    odd = as_operator(
        rx_ops.map(lambda e: e.with_payload({**e.payload, "branch": "odd"})), name="odd"
    )
    return {"even": map_async(mark), "odd": odd}


async def test_ordered_reactivex_form_keeps_input_order() -> None:
    events = [Event(id=f"e{i}", payload={}) for i in range(60)]

    out: list[Event] = await reactivex.from_iterable(events).pipe(
        map_async(_jitter, concurrency=6, ordered=True), rx_ops.to_list()
    )

    assert [e.id for e in out] == [e.id for e in events]


def _regroup() -> Operator:
    # A user's own windowing: batches of up to 5 (or 10 ms), flattened back to events.
    def op(source: reactivex.Observable[Event]) -> reactivex.Observable[Event]:
        return source.pipe(
            rx_ops.buffer_with_time_or_count(timespan=0.01, count=5),
            rx_ops.flat_map(lambda batch: reactivex.from_iterable(batch)),
        )

    return as_operator(op, name="regroup")


async def test_only_a_stage_with_a_users_reactivex_operator_runs_on_the_observable_path(
    tmp_path: Path,
) -> None:
    stages = [
        Stage("before", map_async(_jitter, concurrency=4, ordered=True)),
        Stage("windowed", _regroup(), concurrency=8),
        Stage("after", [batch_async(_batch, max_size=4, max_wait=0.005)]),
    ]
    engine = LaneEngine(stages, 16, StageHooks(), lambda e: None, _raise, lambda: None)
    kinds = [type(segment).__name__ for segment in engine.segments]
    await engine.dispose()
    assert kinds == ["_LaneRun", "_RxStage", "_LaneRun"]

    sink = _Sink(tmp_path / "o.jsonl")
    report = await run_flow(Pipeline("mixed", stages, window=16), IterableSource(_lines(50)), sink)

    assert report.error is None
    assert sorted(e.id for e in sink.events) == sorted(f"t{i}" for i in range(50))
    assert all(e.payload["batched"] >= 1 for e in sink.events)
    # The observable stage is measured like the others.
    assert report.stages["windowed"].count == 50
    assert report.stages["after"].count == 50


def _raise(error: Exception) -> None:
    raise error


async def test_a_cancelled_ordered_call_does_not_hold_back_the_ones_after_it() -> None:
    gate = asyncio.Event()

    async def held(event: Event) -> Event:
        if event.id == "slow":
            await gate.wait()
        return event

    op = map_async(held, concurrency=4, ordered=True)
    assert op.lane is not None
    lane = op.lane()
    first = asyncio.create_task(lane(Event(id="first", payload={})))
    slow = asyncio.create_task(lane(Event(id="slow", payload={})))
    late = asyncio.create_task(lane(Event(id="late", payload={})))
    assert (await first).id == "first"
    await asyncio.sleep(0)
    assert not late.done()  # parked behind "slow"
    slow.cancel()
    assert (await asyncio.wait_for(late, 1)).id == "late"


def test_step_names_are_unique_within_a_pipeline_when_it_is_built() -> None:
    from streamflow.errors import TopologyError

    with pytest.raises(TopologyError, match=r"two steps are named '_same'.*name="):
        Pipeline("twice", [Stage("a", map_async(_same)), Stage("b", map_async(_same))])
    with pytest.raises(TopologyError, match="two steps are named 'x'"):
        Pipeline(
            "fanout",
            [
                Stage(
                    "a",
                    parallel({"l": map_async(_same, name="x"), "r": map_async(_same, name="x")}),
                )
            ],
        )
    # Alternative branches of a route never see the same event: one name may serve both.
    Pipeline(
        "paths",
        [Stage("a", route(lambda e: "l", {"l": map_async(_same), "r": map_async(_same)}))],
    )


async def test_batch_async_and_parallel_run_per_event_in_a_run(tmp_path: Path) -> None:
    sizes: list[int] = []

    async def embed(events: list[Event]) -> Sequence[Event]:
        sizes.append(len(events))
        await asyncio.sleep(0.001)
        return [e.with_payload({**e.payload, "vector": [len(events)]}) for e in events]

    stages = [
        Stage("embed", batch_async(embed, max_size=8, max_wait=0.01)),
        Stage("fan", parallel({"left": map_async(_jitter), "right": map_async(_same)})),
    ]
    engine = LaneEngine(stages, 16, StageHooks(), lambda e: None, _raise, lambda: None)
    kinds = [type(segment).__name__ for segment in engine.segments]
    await engine.dispose()
    sink = _Sink(tmp_path / "o.jsonl")

    report = await run_flow(
        Pipeline("batched", stages, window=32), IterableSource(_lines(64)), sink
    )

    assert kinds == ["_LaneRun"]  # one segment: every stage per event
    assert report.error is None and len(sink.events) == 64
    assert sum(sizes) == 64 and max(sizes) == 8  # concurrent events share batches
    assert {"vector", "left", "right"} <= set(sink.events[0].payload)


def _boom_on_third() -> Operator:
    # A user's own stateful operator that breaks on the third event it sees.
    seen: list[str] = []

    def check(event: Event) -> Event:
        seen.append(event.id)
        if len(seen) == 3:
            raise ValueError(f"boom on {event.id}")
        return event

    def op(source: reactivex.Observable[Event]) -> reactivex.Observable[Event]:
        return source.pipe(rx_ops.map(check))

    return as_operator(op, name="boom")


async def test_a_users_reactivex_error_names_itself_in_the_dead_letters(tmp_path: Path) -> None:
    stages = [Stage("before", map_async(_same)), Stage("boom", _boom_on_third())]
    sink = JsonlSink(tmp_path / "o.jsonl")
    report = await run_flow(Pipeline("boom", stages, window=4), IterableSource(_lines(20)), sink)
    await sink.aclose()

    # A reactivex stream cannot go on after on_error: the run stops on it.
    assert isinstance(report.error, ValueError)
    letters = [json.loads(line) for line in (tmp_path / "o.dlq.jsonl").read_text().splitlines()]
    by_id = {letter["id"]: letter for letter in letters}
    # The event that broke the stage, abandoned inside it, says why and where.
    culprit = by_id["t2"]
    assert culprit["stage"] == "boom"
    assert culprit["error"]["type"] == "ValueError"
    assert "boom on t2" in culprit["error"]["message"]
