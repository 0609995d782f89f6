"""What every transport promises, checked against memory and a real broker alike."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from conftest import Harness, collect, read_topic

from streamflow import Pipeline, Stage, map_async
from streamflow.errors import StepFailed
from streamflow.events import DeadLetter, Event, decode_event, decode_input, dumps, loads, stable_id
from streamflow.flow import CreditWindow
from streamflow.runtime import run_flow


class _StopAfter:
    """A sink wrapper that sets ``stop`` once ``count`` records were handed to the sink."""

    def __init__(self, sink: Any, count: int, stop: asyncio.Event) -> None:
        self.sink = sink
        self.left = count
        self.stop = stop

    acknowledges = True  # the wrapped topic sink releases credit on its acknowledgement

    def _one(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.stop.set()

    def write(self, event: Event) -> None:
        self.sink.write(event)
        self._one()

    def reject(self, record: Any, error: Any, ticket: Any) -> None:
        self.sink.reject(record, error, ticket)
        self._one()

    def abandon(self, event: Event) -> None:
        self.sink.abandon(event)

    async def flush(self) -> None:
        await self.sink.flush()

    async def aclose(self) -> None:
        await self.sink.aclose()


async def _run(
    transport: Harness, pipeline: Pipeline, inputs: list[tuple[bytes | None, bytes]]
) -> Any:
    name = pipeline.name
    topics = [
        pipeline.input_topic,
        pipeline.output_topic,
        pipeline.dlq_topic,
        pipeline.review_topic,
    ]
    await transport.create(topics)
    await transport.produce(pipeline.input_topic, inputs)
    stage = pipeline.stages[0].name
    source = transport.source(pipeline.input_topic, pipeline.group(stage))
    sink = await transport.sink(
        output=pipeline.output_topic,
        dlq=pipeline.dlq_topic,
        review=pipeline.review_topic,
        stage=stage,
    )
    stop = asyncio.Event()
    report = await asyncio.wait_for(
        run_flow(pipeline, source, _StopAfter(sink, len(inputs), stop), stop=stop, window=64),
        30,
    )
    await sink.aclose()
    assert report.error is None, f"{name}: {report.error!r}"
    return source


async def test_per_key_order_is_kept_end_to_end(transport: Harness) -> None:
    rng = random.Random(7)

    async def jittery(event: Event) -> Event:
        # Uneven step times scramble completion order across keys.
        await asyncio.sleep(rng.random() / 500)
        return event

    pipeline = Pipeline(
        transport.name("order"),
        [Stage("step", map_async(jittery, concurrency=16, ordered="key", name="step"))],
    )
    inputs = [
        (f"k{n % 7}".encode(), dumps({"id": f"e{n}", "key": f"k{n % 7}", "seq": n}))
        for n in range(210)
    ]
    await _run(transport, pipeline, inputs)

    out = await read_topic(transport, pipeline.output_topic, len(inputs))
    by_key: dict[str, list[int]] = {}
    for record in out:
        event = decode_event(record.value)
        assert record.key is not None and record.key.decode() == event.key
        by_key.setdefault(event.key or "", []).append(event.payload["seq"])
    assert sorted(by_key) == [f"k{n}" for n in range(7)]
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"key {key} out of order: {seqs}"
        assert len(seqs) == 30


async def test_committed_offset_stays_behind_an_unfinished_event(transport: Harness) -> None:
    topic, group = transport.name("hold"), transport.name("group")
    await transport.create([topic], partitions=1)
    await transport.produce(topic, [(None, dumps({"n": n})) for n in range(20)])
    source = transport.source(topic, group)
    got = await collect(source, 20)
    assert [e.record.offset for e in got] == list(range(20))

    held = got[5]
    for item in got:
        if item is not held:
            item.ticket.release()
    await source.commit()
    assert await transport.committed(group, topic) == {0: 5}

    held.ticket.release()
    await source.commit()
    assert await transport.committed(group, topic) == {0: 20}
    await source.aclose()


async def test_restart_redelivers_unfinished_records_with_the_same_ids(transport: Harness) -> None:
    topic, group = transport.name("restart"), transport.name("group")
    await transport.create([topic], partitions=1)
    await transport.produce(topic, [(b"cust", dumps({"text": f"t{n}"})) for n in range(10)])

    def event_id(record: Any) -> str:
        return decode_input(record.value, None, origin=record.origin).id

    first = transport.source(topic, group)
    got = await collect(first, 10)
    ids_before = {e.record.offset: event_id(e.record) for e in got}
    for item in got:
        if item.record.offset not in (4, 5, 8, 9):
            item.ticket.release()
    # Closing is the final commit point: everything before offset 4 is done.
    await first.aclose()
    assert await transport.committed(group, topic) == {0: 4}

    second = transport.source(topic, group)
    again = await collect(second, 6)
    assert [e.record.offset for e in again] == [4, 5, 6, 7, 8, 9]
    for item in again:
        assert event_id(item.record) == ids_before[item.record.offset]
        item.ticket.release()
    await second.aclose()
    assert await transport.committed(group, topic) == {0: 10}


async def test_dead_letters_carry_stage_error_attempts_and_original_bytes(
    transport: Harness,
) -> None:
    async def refuse_odd(event: Event) -> Event:
        if event.payload["n"] % 2:
            raise StepFailed("odd numbers are refused")
        return event

    pipeline = Pipeline(
        transport.name("dlq"), [Stage("judge", map_async(refuse_odd, name="judge"))]
    )
    inputs = [(b"k", dumps({"id": f"e{n}", "n": n})) for n in range(4)]
    inputs.append((b"k", b"this is not json"))
    source = await _run(transport, pipeline, inputs)

    letters = [
        DeadLetter.model_validate(loads(r.value))
        for r in await read_topic(transport, pipeline.dlq_topic, 3)
    ]
    failed = sorted((d for d in letters if d.stage == "judge"), key=lambda d: d.id or "")
    assert [d.id for d in failed] == ["e1", "e3"]
    for letter in failed:
        assert letter.error.type == "StepFailed"
        assert "odd numbers" in letter.error.message
        assert letter.attempts >= 1
        assert letter.original is not None and loads(letter.original)["id"] == letter.id
        assert letter.event is not None and letter.event.id == letter.id
    (undecodable,) = [d for d in letters if d.stage == "decode"]
    assert undecodable.original == "this is not json"
    assert undecodable.error.type == "DecodeError"
    assert undecodable.origin is not None and undecodable.origin.startswith(pipeline.input_topic)
    # Dead-lettering finishes a record, so every input offset is committed.
    committed = await transport.committed(pipeline.group("judge"), pipeline.input_topic)
    assert sum(committed.values()) == len(inputs)
    assert source.lag() == [] or sum(row[2] for row in source.lag()) == 0


async def test_plain_json_is_wrapped_with_the_kafka_key_and_a_stable_id(
    transport: Harness,
) -> None:
    async def passthrough(event: Event) -> Event:
        return event

    pipeline = Pipeline(transport.name("plain"), [Stage("echo", map_async(passthrough))])
    await _run(transport, pipeline, [(b"customer-42", b'{"text": "where is my order?"}')])

    (record,) = await read_topic(transport, pipeline.output_topic, 1)
    event = decode_event(record.value)
    assert event.key == "customer-42"
    assert record.key == b"customer-42"
    assert event.payload == {"text": "where is my order?"}
    (partition,) = [
        p
        for p, off in (
            await transport.committed(pipeline.group("echo"), pipeline.input_topic)
        ).items()
        if off == 1
    ]
    assert event.id == stable_id(f"{pipeline.input_topic}/{partition}/0")
    headers = dict(record.headers)
    assert headers["streamflow-id"] == event.id.encode()
    assert headers["streamflow-trace"] == event.id.encode()


async def test_source_pauses_every_partition_when_credit_runs_out(transport: Harness) -> None:
    topic, group = transport.name("pause"), transport.name("group")
    await transport.create([topic], partitions=3)
    await transport.produce(topic, [(f"k{n}".encode(), dumps({"n": n})) for n in range(60)])
    source = transport.source(topic, group)
    got: list[Any] = []
    stop = asyncio.Event()
    window = CreditWindow(4)
    task = asyncio.create_task(source.run(lambda r, t: got.append(t), window, stop))
    try:
        for _ in range(1000):
            if len(got) == 4 and source.paused_count() == 3:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 4
        assert source.paused_count() == 3
        assert source.healthy()[0]
        got[0].release()
        for _ in range(1000):
            if len(got) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 5, "freed credit did not resume reading"
    finally:
        stop.set()
        await task
        await source.aclose()
