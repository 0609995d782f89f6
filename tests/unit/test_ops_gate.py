"""gate: the stage boundary, a bounded channel and a cap on events inside the stage."""

from __future__ import annotations

import asyncio

import pytest
from reactivex import operators as rx_ops
from reactivex.subject import Subject

from streamflow.errors import CapacityExceeded, ConfigError
from streamflow.events import Event
from streamflow.ops import as_operator, filter, map_async
from streamflow.ops._gate import BoundedChannel, ChannelStatistics, gate
from streamflow.testing.marbles import run_marbles

pytestmark = pytest.mark.looptime


class Counting:
    """A one-second step that records how many calls overlap."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.running = 0
        self.peak = 0
        self.seconds = seconds

    async def __call__(self, event: Event) -> Event:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(self.seconds)
        self.running -= 1
        return event


async def test_at_most_concurrency_events_are_inside_the_inner_operator() -> None:
    step = Counting()
    entered: list[str] = []
    exited: list[str] = []
    stage = gate(
        map_async(step, concurrency=10),
        concurrency=2,
        capacity=8,
        name="generate",
        on_enter=lambda e: entered.append(e.id),
        on_exit=lambda e: exited.append(e.id),
    )

    result = await run_marbles(stage, "(abcdef)|")

    assert step.peak == 2
    assert sorted(result.ids) == list("abcdef")
    # Three waves of two one-second calls.
    assert [t for t, _ in result.pairs] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert result.completed_at == 3.0
    assert entered == list("abcdef")
    assert sorted(exited) == list("abcdef")


async def test_statistics_report_peaks_and_settle_to_zero() -> None:
    stage = gate(map_async(Counting(), concurrency=10), concurrency=2, capacity=8, name="s")

    await run_marbles(stage, "(abcdef)-g|")

    stats = stage.statistics()
    assert isinstance(stats, ChannelStatistics)
    assert stats == ChannelStatistics(
        buffered=0, capacity=8, inside=0, peak_buffered=4, peak_inside=2
    )


async def test_channel_overflow_raises_capacity_exceeded() -> None:
    stage = gate(map_async(Counting(), concurrency=4), concurrency=1, capacity=2, name="check")
    source: Subject[Event] = Subject()
    stage(source).subscribe(lambda e: None)

    source.on_next(Event(id="a"))  # enters the stage
    source.on_next(Event(id="b"))  # waits
    source.on_next(Event(id="c"))  # waits; the channel is full
    with pytest.raises(CapacityExceeded, match="check: channel full at 2") as caught:
        source.on_next(Event(id="d"))

    assert caught.value.stage == "check"
    stats = stage.statistics()
    assert isinstance(stats, ChannelStatistics)
    assert (stats.inside, stats.buffered) == (1, 2)


async def test_synchronous_inner_operator_drains_without_recursion() -> None:
    # A user's own reactivex operator emits while it is being fed.
    def mark(event: Event) -> Event:
        return event if int(event.id) % 2 == 0 else event.evolve(outcome="filtered")

    stage = gate(as_operator(rx_ops.map(mark)), concurrency=1, capacity=2000, name="f")
    source: Subject[Event] = Subject()
    out: list[Event] = []
    stage(source).subscribe(out.append)

    for i in range(1500):
        source.on_next(Event(id=str(i)))
    source.on_completed()

    assert [e.id for e in out] == [str(i) for i in range(1500)]
    assert sum(e.outcome == "filtered" for e in out) == 750


def test_bounded_channel_is_fifo_and_keeps_its_peak() -> None:
    channel = BoundedChannel(2, name="in")
    channel.put(Event(id="a"))
    channel.put(Event(id="b"))

    with pytest.raises(CapacityExceeded):
        channel.put(Event(id="c"))
    assert [channel.get().id, channel.get().id] == ["a", "b"]
    assert (len(channel), channel.peak) == (0, 2)


def test_gate_and_channel_reject_a_zero_bound() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        gate(filter(lambda e: True), concurrency=0, capacity=1, name="s")
    with pytest.raises(ConfigError, match="capacity"):
        BoundedChannel(0)
