"""A committed offset outside the log follows --offset-reset: never a silent skip."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest
from aiokafka import TopicPartition

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.errors import TransportBroken
from streamflow.runtime import run_worker
from tests.kafka_broker import free_port

pytestmark = pytest.mark.kafka


async def _work(event: Event) -> Event:
    return event


async def _setup(bootstrap: str, name: str, records: int, committed: int) -> Pipeline:
    """One-partition topics holding ``records`` inputs, the group committed at ``committed``."""
    from streamflow.transports.kafka import (
        KafkaSettings,
        create_topics,
        make_consumer,
        produce_lines,
    )

    pipeline = Pipeline(name, [Stage("work", map_async(_work, name="work"))], window=16)
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    await create_topics(settings, pipeline.topics(), partitions=1)
    lines = [orjson.dumps({"id": f"T{i}"}) for i in range(records)]
    assert await produce_lines(settings, pipeline.input_topic, lines, key_field=None) == records
    consumer = make_consumer(settings, group_id=pipeline.group("work"), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(pipeline.input_topic, 0)
        consumer.assign([tp])
        # As a worker that outlived its broker's log would have left it.
        await consumer.commit({tp: committed})
    finally:
        await consumer.stop()
    return pipeline


async def _outputs(bootstrap: str, pipeline: Pipeline, count: int) -> list[bytes]:
    from streamflow.transports.kafka import KafkaSettings, consume_events

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    return [
        value
        async for _, value in consume_events(
            settings, [pipeline.output_topic], group=None, count=count, idle_timeout=None
        )
    ]


async def _committed(bootstrap: str, pipeline: Pipeline) -> int | None:
    from streamflow.transports.kafka import KafkaSettings, make_consumer

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    consumer = make_consumer(settings, group_id=pipeline.group("work"), enable_auto_commit=False)
    await consumer.start()
    try:
        value: int | None = await consumer.committed(TopicPartition(pipeline.input_topic, 0))
        return value
    finally:
        await consumer.stop()


async def test_an_offset_past_the_end_of_the_log_stops_the_worker_by_default(
    kafka_broker: str,
) -> None:
    from streamflow.transports.kafka import KafkaSettings

    name = f"reset{uuid.uuid4().hex[:8]}"
    pipeline = await _setup(kafka_broker, name, records=20, committed=5000)

    report = await asyncio.wait_for(
        run_worker(
            pipeline,
            "work",
            KafkaSettings(bootstrap_servers=kafka_broker),
            stop=asyncio.Event(),
            drain_timeout=2,
        ),
        timeout=60,
    )

    assert isinstance(report.error, TransportBroken)
    message = str(report.error)
    assert f"offset 5000 of {name}.in/0" in message
    assert "offsets 0 to 20" in message and "--offset-reset" in message
    assert report.read == 0
    # Nothing past the end of the log was committed on the way out.
    assert await _committed(kafka_broker, pipeline) == 5000


async def test_offset_reset_earliest_reads_what_the_log_holds(kafka_broker: str) -> None:
    from streamflow.transports.kafka import KafkaSettings

    name = f"reset{uuid.uuid4().hex[:8]}"
    pipeline = await _setup(kafka_broker, name, records=20, committed=5000)
    stop = asyncio.Event()
    port = free_port()
    worker = asyncio.create_task(
        run_worker(
            pipeline,
            "work",
            KafkaSettings(bootstrap_servers=kafka_broker, offset_reset="earliest"),
            stop=stop,
            drain_timeout=5,
            metrics_port=port,
        )
    )
    try:
        outputs = await asyncio.wait_for(_outputs(kafka_broker, pipeline, 20), timeout=60)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        assert f"offset 5000 of {name}.in/0 lay outside the log" in health.text
        assert "reset to 0 (earliest)" in health.text
    finally:
        stop.set()
        report = await asyncio.wait_for(worker, timeout=60)

    assert report.error is None
    assert sorted(orjson.loads(v)["id"] for v in outputs) == sorted(f"T{i}" for i in range(20))
    assert await _committed(kafka_broker, pipeline) == 20
