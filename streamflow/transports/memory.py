"""An in-memory broker that behaves like Kafka, for tests and for trying pipelines offline.

:class:`MemoryBroker` holds topics split into partitions (records with a key go
to ``crc32(key) % partitions``, so one key keeps one partition and its order)
and the committed offsets of consumer groups. :class:`MemorySource` and
:class:`MemorySink` follow the same rules as the Kafka transport:

- the source takes one credit per record, pauses partitions that hold too much
  of the window or whose uncommitted span is too long, and commits only the
  contiguous completed watermark per partition (every ``commit_interval`` and
  on close);
- a new source of the same group resumes from the committed offsets, so work
  that was not finished is delivered again, with the same origin and so the
  same derived event ids;
- the sink routes ``ok``/``review``/``failed`` events to the output, review and
  dead-letter topics and releases a ticket only once the record is stored.

A group has one member at a time here (no rebalancing between members).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from streamflow.errors import ConfigError, StreamflowError, TransportClosed
from streamflow.flow import CreditWindow, Ticket
from streamflow.transports._base import Emit, Record
from streamflow.transports._offsets import OffsetTicket, PartitionOffsets, SourceStatistics
from streamflow.transports._routing import Outgoing, RoutingSink

__all__ = ["MemoryBroker", "MemoryMessage", "MemorySink", "MemorySource"]

_CREDIT_WAIT_S = 0.1
_DATA_WAIT_S = 0.1


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """One stored record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class MemoryBroker:
    """Topics with partitions and consumer-group offsets, all in this process.

    Args:
        default_partitions: partitions of a topic created on first use.
    """

    def __init__(self, *, default_partitions: int = 3) -> None:
        if default_partitions < 1:
            raise ConfigError("a memory broker needs at least one partition per topic")
        self.default_partitions = default_partitions
        self._logs: dict[str, list[list[MemoryMessage]]] = {}
        self._committed: dict[tuple[str, str], dict[int, int]] = {}
        self._members: dict[tuple[str, str], MemorySource] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._round_robin = 0
        self.failing: StreamflowError | None = None

    def create_topic(self, name: str, partitions: int | None = None) -> bool:
        """Create ``name`` with ``partitions`` (default: the broker's); False if it exists."""
        if name in self._logs:
            return False
        count = partitions or self.default_partitions
        if count < 1:
            raise ConfigError(f"topic {name!r} needs at least one partition")
        self._logs[name] = [[] for _ in range(count)]
        return True

    def topics(self) -> list[str]:
        """Return the topic names."""
        return sorted(self._logs)

    def partitions(self, topic: str) -> int:
        """Return how many partitions ``topic`` has (creating it if needed)."""
        self.create_topic(topic)
        return len(self._logs[topic])

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> MemoryMessage:
        """Append a record; the key picks the partition. Returns the stored record.

        Raises:
            StreamflowError: the error set in :attr:`failing` (to test failing writes).
        """
        if self.failing is not None:
            raise self.failing
        logs = self._logs.get(topic)
        if logs is None:
            self.create_topic(topic)
            logs = self._logs[topic]
        if key is not None:
            partition = zlib.crc32(key) % len(logs)
        else:
            partition = self._round_robin % len(logs)
            self._round_robin += 1
        log = logs[partition]
        message = MemoryMessage(topic, partition, len(log), key, value, tuple(headers))
        log.append(message)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return message

    def messages(self, topic: str) -> list[MemoryMessage]:
        """Return every record of ``topic``, partition by partition, in offset order."""
        return [m for log in self._logs.get(topic, []) for m in log]

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Return ``{partition: next offset}``."""
        return {p: len(log) for p, log in enumerate(self._logs.get(topic, []))}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Return the committed offsets of ``group`` on ``topic`` (missing: none committed)."""
        return dict(self._committed.get((group, topic), {}))

    def commit(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Store committed offsets for ``group``."""
        self._committed.setdefault((group, topic), {}).update(offsets)

    def _read(self, topic: str, partition: int, start: int, limit: int) -> list[MemoryMessage]:
        return self._logs[topic][partition][start : start + limit]

    def _data_waiter(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def _join(self, group: str, topic: str, member: MemorySource) -> None:
        current = self._members.get((group, topic))
        if current is not None and current is not member and not current.closed:
            raise ConfigError(
                f"group {group!r} already has a member reading {topic!r}; the memory "
                "broker runs one member per group (close the other source first)"
            )
        self._members[(group, topic)] = member

    def _leave(self, group: str, topic: str, member: MemorySource) -> None:
        if self._members.get((group, topic)) is member:
            del self._members[(group, topic)]


class MemorySource:
    """Reads a memory-broker topic as the member of a consumer group, against credit.

    Args:
        broker: the broker.
        topic: the topic to read.
        group: the consumer group.
        stage: the stage this source feeds.
        commit_interval: seconds between watermark commits.
        max_in_flight_per_partition: most records of one partition in flight
            (default: ``window // partitions * 2``, at least 1).
        max_uncommitted_per_partition: pause a partition whose uncommitted span reaches this.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        topic: str,
        group: str,
        *,
        stage: str,
        commit_interval: float = 1.0,
        max_in_flight_per_partition: int | None = None,
        max_uncommitted_per_partition: int = 10_000,
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.stage = stage
        self.name = f"memory://{topic}?group={group}"
        self.commit_interval = commit_interval
        self.max_in_flight_per_partition = max_in_flight_per_partition
        self.max_uncommitted_per_partition = max_uncommitted_per_partition
        self.closed = False
        self._trackers: dict[int, PartitionOffsets] = {}
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()
        self._committed: dict[int, int] = {}
        self._fetched = 0
        self._commits = 0
        self._pauses = 0
        self._resumes = 0
        self._started = False

    def _start(self) -> None:
        if self.closed:
            raise TransportClosed(f"source of {self.topic} is closed", topic=self.topic)
        if self._started:
            return
        self.broker._join(self.group, self.topic, self)
        self._committed = self.broker.committed(self.group, self.topic)
        for partition in range(self.broker.partitions(self.topic)):
            start = self._committed.get(partition, 0)
            self._positions[partition] = start
            self._trackers[partition] = PartitionOffsets(start)
        self._started = True

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit records against credit until ``stop`` is set (waits for new records).

        Args:
            emit: called with each record and its ticket.
            window: the credit window; one credit per record.
            stop: set to stop reading.
        """
        self._start()
        loop = asyncio.get_running_loop()
        low_tide = max(1, window.size // 4)
        cap = self.max_in_flight_per_partition or max(1, window.size // len(self._trackers) * 2)
        last_commit = loop.time()
        while not stop.is_set() and not self.closed:
            if loop.time() - last_commit >= self.commit_interval:
                self._commit()
                last_commit = loop.time()
            free = window.available
            if free < low_tide and window.in_use:
                self._apply_pauses(free, cap)
                await window.wait(low_tide, timeout=_CREDIT_WAIT_S)
                continue
            self._apply_pauses(free, cap)
            waiter = self.broker._data_waiter()
            emitted = self._fetch(emit, window, free)
            if not emitted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, _DATA_WAIT_S)
            else:
                waiter.cancel()
                # Let completions and the stages run between fetches, as a network poll would.
                await asyncio.sleep(0)

    def _fetch(self, emit: Emit, window: CreditWindow, free: int) -> int:
        emitted = 0
        for partition, tracker in self._trackers.items():
            if partition in self._paused or emitted >= free:
                continue
            position = self._positions[partition]
            batch = self.broker._read(self.topic, partition, position, free - emitted)
            for message in batch:
                window.take()
                tracker.add(message.offset)
                emit(
                    Record(
                        value=message.value,
                        origin=f"{self.topic}/{partition}/{message.offset}",
                        key=message.key,
                        headers=message.headers,
                        topic=self.topic,
                        partition=partition,
                        offset=message.offset,
                    ),
                    OffsetTicket(window, tracker, message.offset),
                )
            self._positions[partition] = position + len(batch)
            emitted += len(batch)
        self._fetched += emitted
        return emitted

    def _apply_pauses(self, free: int, cap: int) -> None:
        if free <= 0:
            want = set(self._trackers)
        else:
            want = {
                p
                for p, t in self._trackers.items()
                if t.in_flight >= cap or t.span >= self.max_uncommitted_per_partition
            }
        self._pauses += len(want - self._paused)
        self._resumes += len(self._paused - want)
        self._paused = want

    async def commit(self) -> None:
        """Commit each partition's completed watermark if it moved."""
        self._commit()

    def _commit(self) -> None:
        offsets = {
            p: t.watermark
            for p, t in self._trackers.items()
            if t.watermark > self._committed.get(p, 0)
        }
        if offsets:
            self.broker.commit(self.group, self.topic, offsets)
            self._committed.update(offsets)
            self._commits += 1

    async def aclose(self) -> None:
        """Commit the final watermarks and leave the group; safe to call twice."""
        if self.closed:
            return
        if self._started:
            self._commit()
            for tracker in self._trackers.values():
                tracker.live = False
            self.broker._leave(self.group, self.topic, self)
        self.closed = True

    def healthy(self) -> tuple[bool, str]:
        """Return (ok, reason)."""
        if self.closed:
            return False, f"source of {self.topic} is closed"
        return True, f"member of group {self.group}, {len(self._trackers)} partition(s)"

    def lag(self) -> list[tuple[str, int, float]]:
        """Return ``(topic, partition, end offset - committed offset)``."""
        ends = self.broker.end_offsets(self.topic)
        return [(self.topic, p, float(end - self._committed.get(p, 0))) for p, end in ends.items()]

    def committed(self) -> list[tuple[str, int, float]]:
        """Return ``(topic, partition, committed offset)``."""
        return [(self.topic, p, float(o)) for p, o in sorted(self._committed.items())]

    def paused_count(self) -> int:
        """Return how many partitions are paused right now."""
        return len(self._paused)

    def statistics(self) -> SourceStatistics:
        """Return a snapshot: fetched, commits, pauses, resumes, per-partition load."""
        return SourceStatistics(
            fetched=self._fetched,
            commits=self._commits,
            pauses=self._pauses,
            resumes=self._resumes,
            partitions={
                f"{self.topic}/{p}": (t.in_flight, t.span) for p, t in self._trackers.items()
            },
        )


class MemorySink(RoutingSink):
    """Writes events to memory-broker topics; a ticket is released once the record is stored.

    When the broker refuses writes (:attr:`MemoryBroker.failing`), the sink is
    broken: tickets stay unreleased, so the source does not commit past them.

    Args:
        broker: the broker.
        output_topic: where ``ok`` events go.
        dlq_topic: where dead letters go.
        review_topic: where ``review`` events go.
        stage: the stage writing (dead-letter context).
    """

    def __init__(
        self,
        broker: MemoryBroker,
        *,
        output_topic: str,
        dlq_topic: str,
        review_topic: str,
        stage: str,
    ) -> None:
        super().__init__(
            output_topic=output_topic, dlq_topic=dlq_topic, review_topic=review_topic, stage=stage
        )
        self.broker = broker
        self._broken: str | None = None
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect; here for symmetry with the Kafka sink."""

    def _deliver(self, message: Outgoing, ticket: Ticket | None) -> None:
        if self._closed:
            raise TransportClosed("the memory sink is closed", topic=message.topic)
        if self._broken is not None:
            return
        try:
            self.broker.produce(
                message.topic, message.value, key=message.key, headers=message.headers
            )
        except StreamflowError as exc:
            self._broken = str(exc)
            return
        if ticket is not None:
            ticket.release()

    async def flush(self) -> None:
        """Nothing is buffered; returns at once."""

    async def aclose(self) -> None:
        """Close the sink; safe to call twice."""
        self._closed = True

    def healthy(self) -> tuple[bool, str]:
        """Return (ok, reason): False once a write was refused."""
        if self._broken is not None:
            return False, f"writes are failing: {self._broken}"
        if self._closed:
            return False, "sink is closed"
        return True, "memory broker"
