"""The engine: per-event coroutines under the bounds of every stage and step."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.errors import CapacityExceeded, StepFailed, StreamflowError
from streamflow.events import ticket_of
from streamflow.flow import Slots, Ticket
from streamflow.ops import current_stage, filter, route, tap
from streamflow.ops._context import StagePlace
from streamflow.runtime import Runtime, run_flow
from streamflow.transports import IterableSource, JsonlSink, Record


def _lines(n: int) -> list[bytes]:
    return [f'{{"id":"t{i}","customer":"c{i % 5}"}}'.encode() for i in range(n)]


class _Sink(JsonlSink):
    """A JSONL sink that also keeps the events it wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.events: list[Event] = []

    def write(self, event: Event) -> None:
        self.events.append(event)
        super().write(event)


async def test_step_and_stage_bounds_hold_per_event(tmp_path: Path) -> None:
    running = {"step": 0, "stage": 0}
    peak = {"step": 0, "stage": 0}

    def enter(kind: str) -> None:
        running[kind] += 1
        peak[kind] = max(peak[kind], running[kind])

    async def slow(event: Event) -> Event:
        enter("step")
        await asyncio.sleep(0.002)
        running["step"] -= 1
        return event

    async def first(event: Event) -> Event:
        enter("stage")
        await asyncio.sleep(0.001)
        return event

    async def last(event: Event) -> Event:
        running["stage"] -= 1
        return event

    step = map_async(slow, concurrency=3)
    pipeline = Pipeline(
        "bounds",
        [
            Stage(
                "a",
                [map_async(first, concurrency=50), step, map_async(last, concurrency=50)],
                concurrency=5,
            ),
            Stage("b", map_async(_identity, concurrency=2)),
        ],
        window=64,
    )

    report = await run_flow(pipeline, IterableSource(_lines(200)), JsonlSink(tmp_path / "o.jsonl"))

    assert report.done == 200
    assert peak["step"] == 3  # map_async's concurrency, reached and never passed
    assert 3 <= peak["stage"] <= 5  # the stage's concurrency
    stats = step.statistics()
    assert stats.peak_running == 3  # type: ignore[attr-defined]
    assert stats.peak_buffered > 0  # type: ignore[attr-defined]


async def _identity(event: Event) -> Event:
    return event


async def test_steps_see_their_stage_and_inactive_events_skip_steps(tmp_path: Path) -> None:
    seen: dict[str, set[str | None]] = {"a": set(), "b": set()}
    called: list[str] = []

    def step(name: str) -> map_async:  # type: ignore[valid-type]
        async def run(event: Event) -> Event:
            seen[name].add(current_stage.get())
            called.append(event.id)
            return event

        return map_async(run, name=name)

    tapped: list[str] = []
    pipeline = Pipeline(
        "stages",
        [
            Stage("first", [filter(lambda e: e.id != "t1"), step("a")]),
            Stage("second", [tap(lambda e: tapped.append(e.outcome)), step("b")]),
        ],
    )
    sink = _Sink(tmp_path / "o.jsonl")

    await run_flow(pipeline, IterableSource(_lines(3)), sink)

    assert seen == {"a": {"first"}, "b": {"second"}}
    assert "t1" not in called
    assert sorted(tapped) == ["filtered", "ok", "ok"]  # tap sees every event
    filtered = next(e for e in sink.events if e.id == "t1")
    assert [r.step for r in filtered.trace] == ["filter"]


async def test_route_runs_per_event_and_keeps_unknown_labels_out(tmp_path: Path) -> None:
    async def mark(event: Event) -> Event:
        return event.with_payload({**event.payload, "path": "even"})

    chooser = route(
        lambda e: "even" if int(e.id[1:]) % 2 == 0 else "odd" if e.id != "t3" else "nowhere",
        {"even": map_async(mark), "odd": map_async(_identity)},
    )
    assert chooser.lane is not None
    sink = _Sink(tmp_path / "o.jsonl")

    await run_flow(Pipeline("routes", [Stage("r", chooser)]), IterableSource(_lines(6)), sink)

    by_id = {e.id: e for e in sink.events}
    assert {i for i, e in by_id.items() if e.payload.get("path") == "even"} == {"t0", "t2", "t4"}
    assert by_id["t3"].outcome == "failed"
    assert "no branch for label 'nowhere'" in (by_id["t3"].reason or "")


async def test_an_error_outside_any_event_stops_the_run(tmp_path: Path) -> None:
    class Broken(JsonlSink):
        def write(self, event: Event) -> None:
            if event.id == "t7":
                raise OSError("disk full")
            super().write(event)

    pipeline = Pipeline("broken", [Stage("s", map_async(_identity))], window=4)

    report = await run_flow(pipeline, IterableSource(_lines(100)), Broken(tmp_path / "o.jsonl"))

    assert isinstance(report.error, OSError)
    assert report.read < 100


async def test_the_collector_is_left_as_it_was(tmp_path: Path) -> None:
    before = gc.get_threshold()
    pipeline = Pipeline("gc", [Stage("s", map_async(_identity))])
    seen: list[tuple[int, int, int]] = []

    async def look(event: Event) -> Event:
        seen.append(gc.get_threshold())
        return event

    pipeline.stages[0].op = map_async(look)
    await run_flow(
        pipeline,
        IterableSource(_lines(3)),
        JsonlSink(tmp_path / "o.jsonl"),
        runtime=Runtime(tune_gc=True),
    )

    assert seen[0][0] > before[0]  # raised while the run lasted
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_slots_hand_over_in_order_and_survive_cancelled_waiters() -> None:
    slots = Slots("s", 1, capacity=2)
    assert slots.try_take() and not slots.try_take()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await slots.wait()
        order.append(name)

    first = asyncio.create_task(waiter("first"))
    gone = asyncio.create_task(waiter("gone"))
    await asyncio.sleep(0)
    with pytest.raises(CapacityExceeded):
        await slots.wait()  # two wait already: a third is a missing credit upstream
    gone.cancel()
    await asyncio.sleep(0)
    last = asyncio.create_task(waiter("last"))
    await asyncio.sleep(0)

    slots.release()
    await first
    slots.release()
    await last

    assert order == ["first", "last"]
    assert slots.running == 1 and slots.buffered == 0 and slots.peak_buffered == 2


@settings(max_examples=25, deadline=None)
@given(
    window=st.integers(1, 12),
    concurrencies=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    stage_limit=st.none() | st.integers(1, 3),
    latencies=st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=1, max_size=30),
    fail_every=st.integers(2, 7),
    split=st.booleans(),
)
def test_lanes_keep_every_bound_and_lose_nothing(
    window: int,
    concurrencies: list[int],
    stage_limit: int | None,
    latencies: list[float],
    fail_every: int,
    split: bool,
) -> None:
    running = [0] * len(concurrencies)
    peaks = [0] * len(concurrencies)
    written: list[Event] = []

    def step(index: int) -> map_async:  # type: ignore[valid-type]
        async def run(event: Event) -> Event:
            running[index] += 1
            peaks[index] = max(peaks[index], running[index])
            number = int(event.id[1:])
            await asyncio.sleep(latencies[number])
            running[index] -= 1
            if index == len(concurrencies) - 1 and number % fail_every == 0:
                raise StepFailed("bad luck")
            return event

        return map_async(run, concurrency=concurrencies[index], name=f"s{index}")

    class Sink:
        def write(self, event: Event) -> None:
            written.append(event)
            ticket_of(event).release()

        def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
            raise AssertionError(f"every line decodes: {error}")

        def abandon(self, event: Event) -> None:
            raise AssertionError("nothing is abandoned")

        async def flush(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    # A stage per step (the engine runs each step itself), or one stage chaining them.
    steps = [step(i) for i in range(len(concurrencies))]
    stages = (
        [Stage(f"s{i}", op, concurrency=stage_limit) for i, op in enumerate(steps)]
        if split
        else [Stage("all", steps, concurrency=stage_limit)]
    )
    pipeline = Pipeline("prop", stages, window=window)
    lines = _lines(len(latencies))
    loop = looptime.new_event_loop(start=0)
    try:
        # Virtual time: a serial worst case (30 steps of 3 s) must not meet the drain timeout.
        report = loop.run_until_complete(
            run_flow(pipeline, IterableSource(lines), Sink(), drain_timeout=10_000)
        )
    finally:
        loop.close()

    assert report.peak_in_flight <= window
    assert all(peak <= c for peak, c in zip(peaks, concurrencies, strict=True))
    if stage_limit is not None:
        assert max(peaks) <= stage_limit
    assert sorted(e.id for e in written) == sorted(f"t{i}" for i in range(len(latencies)))
    failed = {e.id for e in written if e.outcome == "failed"}
    assert failed == {f"t{i}" for i in range(len(latencies)) if i % fail_every == 0}


async def test_a_step_that_returns_no_event_fails_only_that_event(tmp_path: Path) -> None:
    async def sloppy(event: Event) -> Event:
        return None if event.id == "t1" else event  # type: ignore[return-value]

    sink = _Sink(tmp_path / "o.jsonl")

    await run_flow(
        Pipeline("sloppy", [Stage("s", map_async(sloppy))]),
        IterableSource(_lines(3)),
        sink,
    )

    by_id = {e.id: e for e in sink.events}
    assert [by_id[i].outcome for i in ("t0", "t1", "t2")] == ["ok", "failed", "ok"]
    assert "returned NoneType, expected an Event" in (by_id["t1"].reason or "")
    assert [(r.step, r.outcome) for r in by_id["t1"].trace] == [("sloppy", "failed")]


async def test_a_worker_place_moves_with_its_stage_and_set_still_wins() -> None:
    place = StagePlace()

    async def worker() -> list[str | None]:
        current_stage.follow(place)
        seen = [current_stage.get()]
        place.stage = "classify"
        seen.append(await asyncio.create_task(_stage_now()))  # a task the step awaits
        token = current_stage.set("review")
        seen.append(current_stage.get())
        current_stage.reset(token)
        place.stage = "check"
        seen.append(current_stage.get())
        return seen

    assert await asyncio.create_task(worker()) == [None, "classify", "review", "check"]
    assert current_stage.get() is None  # the worker's context was its own


async def _stage_now() -> str | None:
    return current_stage.get()


async def test_workers_are_reused_and_a_disposed_engine_starts_none() -> None:
    from streamflow.runtime._lanes import LaneEngine
    from streamflow.runtime._pipeline import StageHooks

    delivered: list[str] = []
    stages = [Stage("s", map_async(_identity, concurrency=4, name="s"))]

    def engine() -> LaneEngine:
        return LaneEngine(stages, 8, StageHooks(), lambda e: delivered.append(e.id), _raise, _pass)

    lanes = engine()
    for i in range(3):
        lanes.push(Event(id=f"a{i}", payload={}))
    assert not lanes.segments[0].workers  # started once per loop turn, not once per push
    await asyncio.sleep(0.01)
    assert sorted(delivered) == ["a0", "a1", "a2"] and len(lanes.segments[0].workers) == 3
    for i in range(3):
        lanes.push(Event(id=f"b{i}", payload={}))
    await asyncio.sleep(0.01)
    assert len(delivered) == 6 and len(lanes.segments[0].workers) == 3  # the idle workers took them
    await lanes.dispose()

    late = engine()
    late.push(Event(id="late", payload={}))
    await late.dispose()
    await asyncio.sleep(0.01)
    assert not late.segments[0].workers and len(delivered) == 6


def _raise(error: Exception) -> None:
    raise error


def _pass() -> None:
    pass


async def test_stage_statistics_count_events_inside_and_waiting() -> None:
    from streamflow.runtime._lanes import LaneEngine
    from streamflow.runtime._pipeline import StageHooks

    gate = asyncio.Event()

    async def held(event: Event) -> Event:
        await gate.wait()
        return event

    stages = [
        Stage("one", map_async(held, concurrency=2, name="one")),  # the step's slots count it
        Stage("own", map_async(_identity, concurrency=8, name="own"), concurrency=1),
    ]
    delivered: list[Event] = []
    lanes = LaneEngine(stages, 16, StageHooks(), delivered.append, _raise, _pass)
    for i in range(5):
        lanes.push(Event(id=f"e{i}", payload={}))
    await asyncio.sleep(0.01)
    one = lanes.statistics("one")
    assert (one.inside, one.buffered, one.capacity) == (2, 3, 16)
    gate.set()
    await asyncio.sleep(0.01)
    one, own = lanes.statistics("one"), lanes.statistics("own")
    assert len(delivered) == 5
    assert (one.inside, one.buffered, one.peak_inside, one.peak_buffered) == (0, 0, 2, 3)
    assert (own.inside, own.peak_inside) == (0, 1)  # the stage's own bound
    await lanes.dispose()
