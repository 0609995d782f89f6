"""Topic administration and simple produce/consume helpers (CLI, tests, tooling)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streamflow.errors import ConfigError, DecodeError
from streamflow.events import loads
from streamflow.transports.kafka._clients import (
    make_admin,
    make_consumer,
    make_producer,
    start_client,
)
from streamflow.transports.kafka._errors import map_kafka_error
from streamflow.transports.kafka._settings import KafkaSettings

__all__ = [
    "consume_events",
    "create_topics",
    "describe_topics",
    "missing_topics",
    "produce_lines",
    "topic_partitions",
]

_TOPIC_WAIT_S = 10.0
"""How long a read without a group waits for a topic that is being created."""

# Error code 36: the topic exists already, which is what we wanted.
_TOPIC_EXISTS = TopicAlreadyExistsError.errno


@contextlib.asynccontextmanager
async def _admin(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = make_admin(settings)
    try:
        await start_client(settings, admin)
        yield admin
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def create_topics(
    settings: KafkaSettings,
    topics: list[str],
    *,
    partitions: int = 3,
    replication: int = 1,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create ``topics``; ones that exist already are left as they are.

    Args:
        settings: where the broker is.
        topics: topic names.
        partitions: partitions per new topic.
        replication: replication factor per new topic.
        configs: topic configs of new topics (``retention.ms``, ``min.insync.replicas``).

    Returns:
        The topics that were created now.

    Raises:
        TransportError: the broker could not be reached or refused a topic.
    """
    new = [NewTopic(name, partitions, replication, topic_configs=configs or {}) for name in topics]
    try:
        async with _admin(settings) as admin:
            response = await admin.create_topics(new)
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc) from exc
    created = []
    for row in response.topic_errors:
        name, code = row[0], row[1]
        if code == 0:
            created.append(name)
        elif code != _TOPIC_EXISTS:
            message = row[2] if len(row) > 2 else None
            error = KafkaError(f"creating topic {name!r} failed with code {code}: {message}")
            raise map_kafka_error(error, topic=name)
    return created


async def missing_topics(settings: KafkaSettings, topics: list[str]) -> list[str]:
    """Return those of ``topics`` the cluster does not have (without creating any).

    Args:
        settings: where the broker is.
        topics: topic names.

    Returns:
        The missing ones, in the order given.

    Raises:
        TransportError: the broker could not be reached.
    """
    try:
        async with _admin(settings) as admin:
            # The whole list, not a metadata request for these names: that request
            # may create the topics on a broker that allows auto-creation.
            existing = set(await admin.list_topics())
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc) from exc
    return [topic for topic in topics if topic not in existing]


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> set[int]:
    """The partition numbers of ``topic`` (none when it does not exist).

    Args:
        admin: a started admin client.
        topic: the topic.

    Returns:
        Its partition numbers.
    """
    if topic not in set(await admin.list_topics()):
        return set()
    described = await admin.describe_topics([topic])
    return {
        int(part["partition"])
        for entry in described
        if entry.get("topic") == topic and not entry.get("error_code")
        for part in entry.get("partitions", [])
    }


async def describe_topics(
    settings: KafkaSettings, topics: list[str], groups: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Describe ``topics``: partitions, end offsets and the committed offsets of ``groups``.

    End offsets are the high watermarks that fetch responses report. (Tansu
    answers ListOffsets "latest" with the base offset of the last batch plus
    one, so the larger of both answers is taken.) Committed offsets are read
    with OffsetFetch through a consumer that does not join the group, because
    the admin client's OffsetFetch version is not understood by every broker.

    Args:
        settings: where the broker is.
        topics: topic names; unknown ones are reported with no partitions.
        groups: consumer groups whose committed offsets to include.

    Returns:
        ``{topic: {"partitions": n, "end_offsets": {p: end}, "committed": {group: {p: off}},
        "lag": {group: {p: end - committed}}}}``.

    Raises:
        TransportError: the broker could not be reached.
    """
    groups = groups or []
    consumer = make_consumer(settings, enable_auto_commit=False)
    result: dict[str, dict[str, Any]] = {}
    try:
        await _start(settings, consumer)
        all_tps: list[TopicPartition] = []
        async with _admin(settings) as admin:
            numbered = {topic: sorted(await topic_partitions(admin, topic)) for topic in topics}
        for topic in topics:
            numbers = numbered[topic]
            result[topic] = {"partitions": len(numbers), "end_offsets": {}, "committed": {}}
            all_tps.extend(TopicPartition(topic, p) for p in numbers)
        ends = await _end_offsets(consumer, all_tps) if all_tps else {}
        for tp, end in ends.items():
            result[tp.topic]["end_offsets"][tp.partition] = end
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc) from exc
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    for group in groups:
        committed = await _committed(settings, group, all_tps)
        for topic in topics:
            offsets = {tp.partition: off for tp, off in committed.items() if tp.topic == topic}
            result[topic]["committed"][group] = offsets
            result[topic].setdefault("lag", {})[group] = {
                p: max(0, end - offsets.get(p, 0))
                for p, end in result[topic]["end_offsets"].items()
            }
    return result


async def _end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], wait: float = 2.0
) -> dict[TopicPartition, int]:
    listed: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, listed.get(tp, 0))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
        await consumer.getmany(timeout_ms=100)
    return {tp: max(listed.get(tp, 0), consumer.highwater(tp) or 0) for tp in tps}


async def _committed(
    settings: KafkaSettings, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    consumer = make_consumer(settings, group_id=group, enable_auto_commit=False)
    offsets = {}
    try:
        await _start(settings, consumer)
        for tp in tps:
            value = await consumer.committed(tp)
            if value is not None:
                offsets[tp] = value
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc) from exc
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return offsets


async def produce_lines(
    settings: KafkaSettings,
    topic: str,
    lines: AsyncIterable[bytes] | Iterable[bytes],
    *,
    key_field: str | None,
) -> int:
    """Produce each non-blank line as one record; the key is ``key_field`` of the JSON line.

    Args:
        settings: where the broker is.
        topic: the topic to write.
        lines: JSON lines (bytes).
        key_field: a top-level field whose value becomes the Kafka key (None: no key).

    Returns:
        How many records the broker acknowledged.

    Raises:
        DecodeError: a line is not JSON while ``key_field`` is set.
        TransportError: the broker could not be reached or refused a write.
    """
    producer = make_producer(settings, acks="all", enable_idempotence=False, linger_ms=5)
    pending: list[asyncio.Future[Any]] = []
    count = 0
    try:
        await _start(settings, producer, topic=topic)

        async def send(line: bytes) -> None:
            nonlocal count
            value = line.strip()
            if not value:
                return
            key = None
            if key_field is not None:
                raw = loads(value)
                if not isinstance(raw, dict):
                    raise DecodeError(f"line {count + 1} is not a JSON object")
                if raw.get(key_field) is not None:
                    key = str(raw[key_field]).encode()
            pending.append(await producer.send(topic, value, key=key))
            count += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()

        if isinstance(lines, AsyncIterable):
            async for line in lines:
                await send(line)
        else:
            for line in lines:
                await send(line)
        await asyncio.gather(*pending)
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc, topic=topic) from exc
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
    return count


async def consume_events(
    settings: KafkaSettings,
    topics: list[str],
    *,
    group: str | None,
    count: int | None,
    idle_timeout: float | None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[tuple[str, bytes]]:
    """Yield ``(topic, value)`` from ``topics`` from the start (or the group's position).

    Args:
        settings: where the broker is.
        topics: topics to read.
        group: a consumer group whose offsets are committed as records are yielded
            (None: read from the beginning without a group).
        count: stop after this many records (None: no limit).
        idle_timeout: stop after this many seconds without a record (None: never).
        stop: set it to end the reading at once, even while no record arrives.

    Raises:
        ConfigError: a topic does not exist (reading without a group).
        TransportError: the broker could not be reached.
    """
    consumer = make_consumer(
        settings,
        group_id=group,
        enable_auto_commit=group is not None,
        auto_offset_reset="earliest",
    )
    seen = 0
    stopped = stop or asyncio.Event()
    try:
        await _start(settings, consumer)
        if group is None:
            tps: list[TopicPartition] = []
            async with _admin(settings) as admin:
                for topic in topics:
                    parts = await _partitions(admin, topic, wait=_TOPIC_WAIT_S)
                    if not parts:
                        raise ConfigError(
                            f"topic {topic!r} does not exist; "
                            "create it with `streamflow topics create`"
                        )
                    tps.extend(TopicPartition(topic, p) for p in sorted(parts))
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        else:
            consumer.subscribe(topics)
        last = time.monotonic()
        while (count is None or seen < count) and not stopped.is_set():
            batch = await _poll(
                consumer,
                stopped,
                timeout_ms=200,
                max_records=None if count is None else count - seen,
            )
            if not batch:
                if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                    return
                continue
            last = time.monotonic()
            for tp, records in batch.items():
                for record in records:
                    yield tp.topic, record.value or b""
                    seen += 1
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc) from exc
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _poll(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, *, timeout_ms: int, max_records: int | None
) -> dict[TopicPartition, list[Any]]:
    """One ``getmany``, cut short (empty) when ``stop`` is set meanwhile."""
    fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=timeout_ms, max_records=max_records))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not fetch.done():
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetch
        return {}
    result: dict[TopicPartition, list[Any]] = fetch.result()
    return result


async def _start(
    settings: KafkaSettings, client: AIOKafkaConsumer | Any, *, topic: str | None = None
) -> None:
    await start_client(settings, client, topic=topic)


async def _partitions(admin: AIOKafkaAdminClient, topic: str, *, wait: float) -> set[int]:
    """The partitions of ``topic``; none when it still has none after ``wait`` seconds.

    Reading without a group assigns partitions once, so a topic that is being
    created is worth waiting for.
    """
    deadline = time.monotonic() + wait
    while True:
        parts = await topic_partitions(admin, topic)
        if parts or time.monotonic() >= deadline:
            return parts
        await asyncio.sleep(0.25)
