"""One harness per transport, so the contract suite runs against memory and a real broker."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from streamflow.flow import CreditWindow, Ticket
from streamflow.transports import Record


@dataclass
class Emitted:
    """What a source handed over: the record and its ticket."""

    record: Record
    ticket: Ticket


class Harness(Protocol):
    kind: str

    def name(self, prefix: str) -> str: ...
    async def create(self, topics: list[str], partitions: int = 3) -> None: ...
    async def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None: ...
    def source(self, topic: str, group: str, **options: Any) -> Any: ...
    async def sink(self, *, output: str, dlq: str, review: str, stage: str) -> Any: ...
    async def committed(self, group: str, topic: str) -> dict[int, int]: ...


class MemoryHarness:
    kind = "memory"

    def __init__(self) -> None:
        from streamflow.transports.memory import MemoryBroker

        self.broker = MemoryBroker()

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    async def create(self, topics: list[str], partitions: int = 3) -> None:
        for topic in topics:
            self.broker.create_topic(topic, partitions)

    async def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        for key, value in records:
            self.broker.produce(topic, value, key=key)

    def source(self, topic: str, group: str, **options: Any) -> Any:
        from streamflow.transports.memory import MemorySource

        return MemorySource(self.broker, topic, group, stage="contract", **options)

    async def sink(self, *, output: str, dlq: str, review: str, stage: str) -> Any:
        from streamflow.transports.memory import MemorySink

        sink = MemorySink(
            self.broker, output_topic=output, dlq_topic=dlq, review_topic=review, stage=stage
        )
        await sink.start()
        return sink

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return self.broker.committed(group, topic)


class KafkaHarness:
    kind = "kafka"

    def __init__(self, bootstrap: str) -> None:
        from streamflow.transports.kafka import KafkaSettings

        # Tansu holds a JoinGroup for about half the session timeout, and a group
        # that a member left waits for that member's session to expire: short
        # sessions keep joins and restarts around a second or two.
        self.settings = KafkaSettings(bootstrap=bootstrap, session_timeout_ms=2000)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    async def create(self, topics: list[str], partitions: int = 3) -> None:
        from streamflow.transports.kafka import create_topics

        await create_topics(self.settings, topics, partitions=partitions)

    async def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        from streamflow.transports.kafka import KafkaSink

        # A raw producer: the sink's producer settings, but bytes as they are.
        sink = KafkaSink(
            self.settings, output_topic=topic, dlq_topic=topic, review_topic=topic, stage="producer"
        )
        await sink.start()
        try:
            producer = sink._producer
            assert producer is not None
            futures = [await producer.send(topic, value, key=key) for key, value in records]
            await asyncio.gather(*futures)
        finally:
            await sink.aclose()

    def source(self, topic: str, group: str, **options: Any) -> Any:
        from streamflow.transports.kafka import KafkaSource

        settings = self.settings.model_copy(update=options)
        return KafkaSource(settings, topic, group, stage="contract")

    async def sink(self, *, output: str, dlq: str, review: str, stage: str) -> Any:
        from streamflow.transports.kafka import KafkaSink

        sink = KafkaSink(
            self.settings, output_topic=output, dlq_topic=dlq, review_topic=review, stage=stage
        )
        await sink.start()
        return sink

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        from streamflow.transports.kafka import describe_topics

        described = await describe_topics(self.settings, [topic], groups=[group])
        offsets: dict[int, int] = described[topic]["committed"][group]
        return offsets


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def transport(request: pytest.FixtureRequest) -> Harness:
    """The transport under test: the in-memory broker, then the real one."""
    if request.param == "memory":
        return MemoryHarness()
    return KafkaHarness(request.getfixturevalue("kafka_broker"))


async def collect(
    source: Any, count: int, *, window: int = 1024, timeout: float = 20.0
) -> list[Emitted]:
    """Run ``source`` until it emitted ``count`` records (tickets left unreleased)."""
    got: list[Emitted] = []
    stop = asyncio.Event()

    def emit(record: Record, ticket: Ticket) -> None:
        got.append(Emitted(record, ticket))
        if len(got) >= count:
            stop.set()

    credits = CreditWindow(window)
    try:
        await asyncio.wait_for(source.run(emit, credits, stop), timeout)
    except TimeoutError:
        raise AssertionError(
            f"source emitted {len(got)} of {count} records in {timeout}s"
        ) from None
    return got


async def read_topic(harness: Harness, topic: str, count: int) -> list[Record]:
    """Read ``count`` records of ``topic`` through a fresh group of the transport's own source."""
    source = harness.source(topic, harness.name("reader"))
    try:
        got = await collect(source, count)
        for item in got:
            item.ticket.release()
    finally:
        await source.aclose()
    return [item.record for item in got]
