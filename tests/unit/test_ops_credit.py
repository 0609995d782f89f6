"""Credit: a window of W bounds the events in flight through any chain of stages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex.subject import Subject

from streamflow.errors import ConfigError, StepFailed
from streamflow.events import Event
from streamflow.flow import CreditWindow, Ticket
from streamflow.ops import map_async, pipe

T = TypeVar("T")

Mode = bool | Literal["key"]


def run_in_virtual_time(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on a fresh fake-time loop that starts at 0."""
    loop = looptime.new_event_loop(start=0)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


@dataclass
class Scenario:
    window: int
    concurrencies: list[int]
    mode: Mode
    latencies: list[list[float]]  # per event, per stage
    gaps: list[float]  # source pause after each emit
    fail_at: list[int | None]  # stage index where an event fails, if any
    keys: list[str]


@dataclass
class Observed:
    out: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    peak_in_flight: int = 0
    in_flight_seen_by_steps: list[int] = field(default_factory=list)
    window_in_use_at_end: int = -1
    window_peak: int = -1


async def run_through_credit(s: Scenario) -> Observed:
    """Emit against credit through map_async stages; the sink returns the credit."""
    loop = asyncio.get_running_loop()
    window = CreditWindow(s.window)
    seen = Observed()
    in_flight = 0

    def stage(index: int) -> Callable[[Event], Awaitable[Event]]:
        async def step(event: Event) -> Event:
            seen.in_flight_seen_by_steps.append(in_flight)
            await asyncio.sleep(s.latencies[int(event.id)][index])
            if s.fail_at[int(event.id)] == index:
                raise StepFailed("bad luck")
            return event.with_payload(f"{event.payload}>{index}")

        return step

    chain = pipe(
        *(
            map_async(stage(i), concurrency=c, ordered=s.mode, name=f"stage{i}")
            for i, c in enumerate(s.concurrencies)
        )
    )
    source: Subject[Event] = Subject()
    finished: asyncio.Future[None] = loop.create_future()

    def sink(event: Event) -> None:
        nonlocal in_flight
        event._ticket.release()
        in_flight -= 1
        seen.out.append(event.id)
        if event.outcome == "failed":
            seen.failed.add(event.id)

    chain(source).subscribe(
        sink, lambda exc: finished.set_exception(exc), lambda: finished.set_result(None)
    )
    for i, gap in enumerate(s.gaps):
        await window.acquire()
        in_flight += 1
        seen.peak_in_flight = max(seen.peak_in_flight, in_flight)
        event = Event(id=str(i), key=s.keys[i], payload=str(i))
        event._ticket = Ticket(window)
        source.on_next(event)
        if gap:
            await asyncio.sleep(gap)
    source.on_completed()
    await asyncio.wait_for(finished, timeout=10_000)
    seen.window_in_use_at_end = window.in_use
    seen.window_peak = window.peak_in_use
    return seen


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    concurrencies = draw(st.lists(st.integers(1, 5), min_size=2, max_size=3))
    # The stages could hold more than the window: only credit keeps the bound.
    window = draw(st.integers(1, sum(concurrencies) - 1))
    n = draw(st.integers(1, 25))
    stages = len(concurrencies)
    latency = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0])
    return Scenario(
        window=window,
        concurrencies=concurrencies,
        mode=draw(st.sampled_from([False, True, "key"])),
        latencies=draw(
            st.lists(st.lists(latency, min_size=stages, max_size=stages), min_size=n, max_size=n)
        ),
        gaps=draw(st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0]), min_size=n, max_size=n)),
        fail_at=draw(st.lists(st.none() | st.integers(0, stages - 1), min_size=n, max_size=n)),
        keys=draw(st.lists(st.sampled_from(["k1", "k2", "k3"]), min_size=n, max_size=n)),
    )


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_in_flight_never_exceeds_the_window_and_every_event_comes_out_once(s: Scenario) -> None:
    seen = run_in_virtual_time(lambda: run_through_credit(s))

    n = len(s.gaps)
    assert seen.peak_in_flight <= s.window
    assert max(seen.in_flight_seen_by_steps, default=0) <= s.window
    assert seen.window_peak <= s.window
    assert sorted(seen.out, key=int) == [str(i) for i in range(n)]
    assert seen.window_in_use_at_end == 0
    if s.mode is True:
        assert seen.out == [str(i) for i in range(n)]
    if s.mode == "key":
        # Failed events head for the dead letters and may overtake their key.
        for key in set(s.keys):
            ids = [i for i in seen.out if s.keys[int(i)] == key and i not in seen.failed]
            assert ids == sorted(ids, key=int)
    assert seen.failed == {str(i) for i, stage in enumerate(s.fail_at) if stage is not None}


def test_a_slow_stage_makes_the_source_wait_for_credit() -> None:
    emitted: list[float] = []
    done_at: list[float] = []

    async def main() -> CreditWindow:
        loop = asyncio.get_running_loop()
        window = CreditWindow(3)

        async def slow(event: Event) -> Event:
            await asyncio.sleep(2)
            return event

        source: Subject[Event] = Subject()
        finished: asyncio.Future[None] = loop.create_future()

        def sink(event: Event) -> None:
            event._ticket.release()
            done_at.append(loop.time())

        map_async(slow, concurrency=10)(source).subscribe(
            sink, on_completed=lambda: finished.set_result(None)
        )
        for i in range(7):
            await window.acquire()
            emitted.append(loop.time())
            event = Event(id=str(i))
            event._ticket = Ticket(window)
            source.on_next(event)
        source.on_completed()
        await finished
        return window

    window = run_in_virtual_time(main)

    assert emitted == [0, 0, 0, 2, 2, 2, 4]
    assert done_at == [2, 2, 2, 4, 4, 4, 6]
    stats = window.statistics()
    assert (stats.size, stats.in_use, stats.peak_in_use) == (3, 0, 3)
    # The source waited 2 s for each of two refills.
    assert stats.waited_seconds == pytest.approx(4.0)


def test_ticket_releases_once_and_runs_its_callback_once() -> None:
    window = CreditWindow(2)
    window.take()
    released: list[str] = []
    ticket = Ticket(window, on_release=lambda: released.append("offset 41 done"))

    ticket.release()
    ticket.release()

    assert ticket.released
    assert released == ["offset 41 done"]
    assert window.in_use == 0


def test_returning_credit_that_was_never_taken_is_an_error() -> None:
    window = CreditWindow(1)
    with pytest.raises(AssertionError, match="credit returned twice"):
        window.give()


def test_wait_with_timeout_reports_whether_credit_came() -> None:
    async def main() -> tuple[bool, float, bool, float]:
        loop = asyncio.get_running_loop()
        window = CreditWindow(1)
        window.take()
        got = await window.wait(timeout=5)
        waited = loop.time()
        loop.call_later(1, window.give)
        got_later = await window.wait(timeout=5)
        return got, waited, got_later, loop.time()

    assert run_in_virtual_time(main) == (False, 5.0, True, 6.0)


def test_window_must_hold_at_least_one_credit() -> None:
    with pytest.raises(ConfigError, match="credit window"):
        CreditWindow(0)
