"""Read a topic once per consumer group: what arrived since the group's last commit.

``dlq replay`` reads the dead-letter topic through a reader like this: it
takes every record from the group's committed offset to the end the topic
had when the read began, and commits only after the records were handled,
so a second replay sends only what arrived since the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamflow.errors import ConfigError, TransportBroken
from streamflow.transports.kafka._admin import topic_partitions
from streamflow.transports.kafka._clients import make_admin, make_consumer, start_client
from streamflow.transports.kafka._errors import map_kafka_error
from streamflow.transports.kafka._settings import KafkaSettings

__all__ = ["GroupReader", "open_group_reader"]

_READ_TIMEOUT_S = 60.0


class GroupReader:
    """Reads one topic to its end from a group's committed offsets; commits on request.

    Args:
        consumer: a started consumer with ``group_id`` set and the partitions assigned.
        topic: the topic.
        partitions: its partitions.
    """

    def __init__(
        self, consumer: AIOKafkaConsumer, topic: str, partitions: list[TopicPartition]
    ) -> None:
        self._consumer = consumer
        self.topic = topic
        self._partitions = partitions
        self._reached: dict[TopicPartition, int] = {}

    async def read_to_end(self, *, timeout: float = _READ_TIMEOUT_S) -> list[bytes]:
        """Return the values from the current position to the end of every partition.

        The end is the high watermark fetch responses report (not ListOffsets,
        which some brokers answer with the start of the last batch).

        Args:
            timeout: seconds the whole read may take.

        Returns:
            The record values, partition by partition in offset order.

        Raises:
            TransportBroken: the end was not reached in time.
        """
        consumer = self._consumer
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            behind = []
            for tp in self._partitions:
                end = consumer.highwater(tp)
                if end is None or await consumer.position(tp) < end:
                    behind.append(tp)
            if not behind:
                break
            if time.monotonic() > deadline:
                raise TransportBroken(
                    f"reading {self.topic} did not reach its end in {timeout:.0f}s",
                    topic=self.topic,
                )
            batch = await consumer.getmany(*behind, timeout_ms=200)
            for records in batch.values():
                values.extend(record.value or b"" for record in records)
        for tp in self._partitions:
            self._reached[tp] = await consumer.position(tp)
        return values

    async def commit(self) -> None:
        """Commit the positions the last read reached (call after handling its records).

        Raises:
            TransportError: the commit failed.
        """
        if not self._reached:
            return
        try:
            await self._consumer.commit(dict(self._reached))
        except (KafkaError, OSError) as exc:
            raise map_kafka_error(exc, topic=self.topic) from exc


@contextlib.asynccontextmanager
async def open_group_reader(
    settings: KafkaSettings, topic: str, group: str, *, from_beginning: bool = False
) -> AsyncIterator[GroupReader]:
    """Open a reader of ``topic`` that resumes from ``group``'s committed offsets.

    The reader is the group's only member: partitions are assigned to it
    directly, so there is no rebalance to wait for.

    Args:
        settings: where the broker is.
        topic: the topic to read.
        group: the consumer group whose offsets say what was read before.
        from_beginning: ignore the committed offsets and start at the first record.

    Yields:
        The reader.

    Raises:
        ConfigError: the topic does not exist.
        TransportError: the broker could not be reached.
    """
    admin = make_admin(settings)
    try:
        await start_client(settings, admin, topic=topic)
        parts = sorted(await topic_partitions(admin, topic))
    except (KafkaError, OSError) as exc:
        raise map_kafka_error(exc, topic=topic) from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    if not parts:
        raise ConfigError(
            f"topic {topic!r} does not exist; create it with `streamflow topics create`"
        )
    consumer = make_consumer(
        settings, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    tps = [TopicPartition(topic, p) for p in parts]
    try:
        await start_client(settings, consumer, topic=topic)
        consumer.assign(tps)
        try:
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                for tp in tps:
                    committed = await consumer.committed(tp)
                    if committed is None:
                        await consumer.seek_to_beginning(tp)
                    else:
                        consumer.seek(tp, committed)
        except (KafkaError, OSError) as exc:
            raise map_kafka_error(exc, topic=topic) from exc
        yield GroupReader(consumer, topic, tps)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 10)
