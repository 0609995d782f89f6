"""The library API: streamflow.open, object sources, a collecting sink, runtime-owned credit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from flow_helpers import lines
from pydantic import BaseModel

import streamflow
from streamflow import (
    Event,
    EventFailed,
    EventFiltered,
    EventParked,
    FlowClosed,
    FlowFull,
    Pipeline,
    RetryPolicy,
    Stage,
    filter,
    map_async,
)
from streamflow.errors import StepFailed
from streamflow.runtime import run_flow
from streamflow.transports import (
    END_OF_INPUT,
    AsyncIterableSource,
    CollectingSink,
    IterableSource,
    QueueSource,
)


class Ticket(BaseModel):
    id: str
    text: str


class Answer(BaseModel):
    id: str
    text: str
    answer: str


async def _answer(event: Event) -> Event:
    ticket = event.payload_as(Ticket)
    if ticket.text == "broken":
        raise StepFailed("cannot answer a broken ticket")
    if ticket.text == "unsure":
        return event.evolve(outcome="review", reason="the model was unsure")
    await asyncio.sleep(0)
    return event.with_payload(Answer(id=ticket.id, text=ticket.text, answer=ticket.text.upper()))


def _pipeline(window: int = 8) -> Pipeline:
    return Pipeline(
        "support",
        [
            Stage("answer", map_async(_answer, concurrency=4)),
            Stage("drop_spam", filter(lambda e: e.payload.text != "spam")),
        ],
        input_model=Ticket,
        window=window,
    )


# -- credit belongs to the runtime --------------------------------------------------


class ProtocolSink:
    """Every method of the Sink protocol, written from its list: none releases a ticket."""

    def __init__(self) -> None:
        self.written: list[Event] = []

    def write(self, event: Event) -> None:
        self.written.append(event)

    def reject(self, record: object, error: object, ticket: object) -> None:
        pass

    def abandon(self, event: Event) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class WriteOnlySink:
    def __init__(self) -> None:
        self.written: list[Event] = []

    def write(self, event: Event) -> None:
        self.written.append(event)


class AsyncWriteSink:
    """A write that becomes durable later: credit comes back when its awaitable completes."""

    def __init__(self) -> None:
        self.durable: list[str] = []

    async def write(self, event: Event) -> None:
        await asyncio.sleep(0.001)
        self.durable.append(event.id)


@pytest.mark.parametrize("sink_type", [ProtocolSink, WriteOnlySink])
async def test_a_sink_that_never_releases_credit_cannot_hang_the_run(sink_type: type) -> None:
    pipeline = Pipeline("p", [Stage("s", map_async(_identity))], window=16)
    sink = sink_type()
    # Before the runtime owned credit this stopped after 16 events, with no error.
    report = await asyncio.wait_for(run_flow(pipeline, IterableSource(lines(100)), sink), 30)
    assert len(sink.written) == 100
    assert report.outcomes == {"ok": 100}


async def test_an_awaitable_write_returns_credit_when_it_completes() -> None:
    pipeline = Pipeline("p", [Stage("s", map_async(_identity))], window=4)
    sink = AsyncWriteSink()
    report = await asyncio.wait_for(run_flow(pipeline, IterableSource(lines(40)), sink), 30)
    assert sorted(sink.durable) == sorted(f"t{i}" for i in range(40))
    assert report.peak_in_flight <= 4


async def _identity(event: Event) -> Event:
    return event


# -- sources of Python objects and a collecting sink ------------------------------------


async def test_async_iterable_and_queue_sources_feed_objects_into_a_collecting_sink() -> None:
    async def tickets() -> AsyncIterator[object]:
        for i in range(5):
            yield Ticket(id=f"a{i}", text="hi")
        yield {"id": "a5", "text": "hi"}  # a dict is validated against the input model
        yield {"id": "a6"}  # ... and one that does not fit is a dead letter with the field

    sink = CollectingSink()
    report = await run_flow(_pipeline(), AsyncIterableSource(tickets()), sink)
    assert sorted(a.id for a in sink.payloads()) == [f"a{i}" for i in range(6)]
    assert all(isinstance(a, Answer) for a in sink.payloads())
    [(record, error)] = sink.rejected
    assert record.item == {"id": "a6"} and "text" in str(error)
    assert report.read == 7

    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
    sink = CollectingSink()
    run = asyncio.create_task(run_flow(_pipeline(), QueueSource(queue), sink))
    for i in range(10):
        await queue.put(Ticket(id=f"q{i}", text="hi" if i != 3 else "spam"))
    await queue.put(END_OF_INPUT)
    report = await asyncio.wait_for(run, 30)
    assert sink.outcomes() == {"ok": 9, "filtered": 1}
    assert report.read == 10


async def test_a_collecting_sink_past_its_capacity_stops_the_run_with_the_reason() -> None:
    pipeline = Pipeline("p", [Stage("s", map_async(_identity))], window=4)
    report = await run_flow(pipeline, IterableSource(lines(10)), CollectingSink(capacity=3))
    assert report.error is not None and "capacity of 3" in str(report.error)


# -- streamflow.open -------------------------------------------------------------------


async def test_process_returns_the_output_payload_and_an_event_for_an_event() -> None:
    async with streamflow.open(_pipeline()) as flow:
        answer = await flow.process(Ticket(id="1", text="where is my order"))
        assert answer == Answer(id="1", text="where is my order", answer="WHERE IS MY ORDER")
        from_dict = await flow.process({"id": "2", "text": "refund"})
        assert from_dict.answer == "REFUND"
        event = await flow.process(Event(id="e3", payload=Ticket(id="3", text="hello")))
        assert isinstance(event, Event) and event.id == "e3" and event.outcome == "ok"
        assert [r.step for r in event.trace] == ["_answer", "drop_spam"][: len(event.trace)]
    assert flow.report is not None and flow.report.outcomes["ok"] == 3


async def test_process_raises_with_the_dead_letter_the_review_reason_or_the_filter() -> None:
    async with streamflow.open(_pipeline()) as flow:
        with pytest.raises(EventFailed) as failed:
            await flow.process(Ticket(id="b", text="broken"))
        letter = failed.value.dead_letter
        assert letter.id == "b" and letter.error.type == "StepFailed"
        assert letter.stage == "answer" and letter.attempts == 1
        with pytest.raises(EventParked) as parked:
            await flow.process(Ticket(id="u", text="unsure"))
        assert parked.value.reason == "the model was unsure"
        with pytest.raises(EventFiltered):
            await flow.process(Ticket(id="s", text="spam"))
        with pytest.raises(EventFailed) as invalid:
            await flow.process({"id": "x"})
        assert invalid.value.dead_letter.stage == "decode"
        assert "text" in invalid.value.dead_letter.error.message
        # The flow goes on after each of them.
        assert (await flow.process(Ticket(id="ok", text="fine"))).answer == "FINE"


async def test_more_callers_than_the_window_all_get_their_answer_in_bounds() -> None:
    peak = 0
    inside = 0

    async def count(event: Event) -> Event:
        nonlocal peak, inside
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.001)
        inside -= 1
        return event

    pipeline = Pipeline("p", [Stage("s", map_async(count, concurrency=64))], window=4)
    async with streamflow.open(pipeline) as flow:
        answers = await asyncio.gather(*(flow.process({"id": f"c{i}"}) for i in range(50)))
        assert [a["id"] for a in answers] == [f"c{i}" for i in range(50)]
    assert peak <= 4


async def test_a_full_window_refuses_at_once_with_a_retry_hint() -> None:
    release = asyncio.Event()

    async def blocked(event: Event) -> Event:
        await release.wait()
        return event

    pipeline = Pipeline("p", [Stage("s", map_async(blocked, concurrency=8))], window=2)
    async with streamflow.open(pipeline) as flow:
        first = [asyncio.create_task(flow.process({"id": f"w{i}"})) for i in range(2)]
        while flow.in_flight < 2:
            await asyncio.sleep(0)
        with pytest.raises(FlowFull) as full:
            await flow.process({"id": "late"}, wait=False)
        assert full.value.retry_after is not None and full.value.retry_after >= 1
        release.set()
        assert [a["id"] for a in await asyncio.gather(*first)] == ["w0", "w1"]
        assert (await flow.process({"id": "again"}, wait=False))["id"] == "again"


async def test_stream_yields_every_finished_event_and_reads_ahead_at_most_the_window() -> None:
    read = 0

    async def tickets() -> AsyncIterator[Ticket]:
        nonlocal read
        for i in range(30):
            read += 1
            yield Ticket(id=f"s{i}", text="spam" if i % 10 == 0 else "hi")

    outcomes: dict[str, str] = {}
    async with streamflow.open(_pipeline(window=4)) as flow:
        async for event in flow.stream(tickets()):
            outcomes[event.id] = event.outcome
            assert read <= len(outcomes) + 4
    assert len(outcomes) == 30
    assert sorted(o for o in outcomes.values() if o != "ok") == ["filtered"] * 3


async def test_leaving_the_block_finishes_what_is_inside() -> None:
    async def slow(event: Event) -> Event:
        await asyncio.sleep(0.05)
        return event

    pipeline = Pipeline("p", [Stage("s", map_async(slow, concurrency=8))], window=8)
    async with streamflow.open(pipeline) as flow:
        pending = [asyncio.create_task(flow.process({"id": f"p{i}"})) for i in range(5)]
        await asyncio.sleep(0)
    assert [t.result()["id"] for t in pending] == [f"p{i}" for i in range(5)]
    with pytest.raises(FlowClosed):
        await flow.process({"id": "after"})


async def test_an_error_in_the_block_abandons_what_is_inside_and_its_callers_hear_it() -> None:
    never = asyncio.Event()

    async def stuck(event: Event) -> Event:
        await never.wait()
        return event

    pipeline = Pipeline("p", [Stage("s", map_async(stuck))], window=2)
    pending: list[asyncio.Task[object]] = []
    with pytest.raises(KeyError):
        async with streamflow.open(pipeline) as flow:
            pending.append(asyncio.create_task(flow.process({"id": "x"})))
            while flow.in_flight < 1:
                await asyncio.sleep(0)
            raise KeyError("the application failed")
    with pytest.raises(FlowClosed):
        await pending[0]


async def test_retry_policy_with_the_flow_counts_the_failing_steps_attempts() -> None:
    async def flaky(event: Event) -> Event:
        raise RuntimeError("model said no")

    pipeline = Pipeline(
        "p",
        [
            Stage("first", map_async(_identity)),
            Stage(
                "model",
                map_async(
                    flaky, retry=RetryPolicy(max_attempts=3, base_delay=0, retry_on=(RuntimeError,))
                ),
            ),
        ],
    )
    async with streamflow.open(pipeline) as flow:
        with pytest.raises(EventFailed) as failed:
            await flow.process({"id": "r"})
    assert failed.value.dead_letter.error.type == "RuntimeError"
    assert failed.value.dead_letter.stage == "model"


async def test_an_input_iterable_that_raises_stops_the_run_with_the_reason() -> None:
    async def broken() -> AsyncIterator[object]:
        yield {"id": "ok", "text": "fine"}
        raise ValueError("the feed went away")

    sink = CollectingSink()
    report = await asyncio.wait_for(run_flow(_pipeline(), AsyncIterableSource(broken()), sink), 30)
    assert report.error is not None and "the feed went away" in str(report.error)
    assert isinstance(report.error.__cause__, ValueError)
