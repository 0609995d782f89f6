"""KafkaSink: produce finished events; release each ticket only on broker acknowledgement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError

from streamflow.errors import TransportClosed, TransportRetriable
from streamflow.events import DEFAULT_LIMITS, RecordLimits
from streamflow.flow import Ticket
from streamflow.transports._routing import Outgoing, RoutingSink, oversized_reject
from streamflow.transports.kafka._clients import make_producer, start_client
from streamflow.transports.kafka._errors import map_kafka_error
from streamflow.transports.kafka._settings import KafkaSettings

__all__ = ["KafkaSink"]

log = logging.getLogger("streamflow.transports.kafka")

# aiokafka already retries inside one send; these are whole re-sends after the
# send future itself failed, before the sink declares itself broken.
_MAX_RESENDS = 3
_MAX_BATCH_BYTES = 256 * 1024
# The broker refuses these for the record itself, not for the connection: the
# record goes to the dead letters and the partition goes on.
_RECORD_REFUSED: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
)


class KafkaSink(RoutingSink):
    """Writes events to the output, review and dead-letter topics.

    A ticket is released only when the broker acknowledged the write, so the
    source commits an offset only behind durable output. ``write`` never waits:
    it hands the message to one writer task that keeps per-partition order;
    nothing else buffers, so the credit window bounds what is pending here.

    Args:
        settings: broker address and timeouts.
        output_topic: where ``ok`` events go.
        dlq_topic: where dead letters go.
        review_topic: where ``review`` events go.
        stage: the stage writing (dead-letter context).
        limits: the size bounds of what is written.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        output_topic: str,
        dlq_topic: str,
        review_topic: str,
        stage: str,
        limits: RecordLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(
            output_topic=output_topic,
            dlq_topic=dlq_topic,
            review_topic=review_topic,
            stage=stage,
            limits=limits,
        )
        self.acknowledged = {"ok": 0, "review": 0, "dead_lettered": 0}
        self._outcome_of = {
            output_topic: "ok",
            review_topic: "review",
            dlq_topic: "dead_lettered",
        }
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._queue: deque[tuple[Outgoing, Ticket | None, int]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending = 0
        self._idle: asyncio.Future[None] | None = None
        self._broken: str | None = None
        self._closed = False
        self.rerouted = 0

    async def start(self) -> None:
        """Connect the producer and start the writer.

        Raises:
            TransportError: the broker could not be reached.
        """
        if self._producer is not None:
            return
        producer = make_producer(
            self.settings,
            acks="all",
            # The broker may not support InitProducerId; ordering per partition
            # comes from the single writer instead.
            enable_idempotence=False,
            linger_ms=self.settings.linger_ms,
            max_batch_size=_MAX_BATCH_BYTES,
        )
        await start_client(self.settings, producer)
        self._producer = producer
        self._wakeup = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def _deliver(self, message: Outgoing, ticket: Ticket | None) -> None:
        if self._closed:
            raise TransportClosed("the Kafka sink is closed", topic=message.topic)
        if self._wakeup is None:
            raise TransportClosed("the Kafka sink was not started", topic=message.topic)
        self._pending += 1
        self._queue.append((message, ticket, 0))
        self._wakeup.set()

    async def _write_loop(self) -> None:
        producer = self._producer
        wakeup = self._wakeup
        assert producer is not None and wakeup is not None
        queue = self._queue
        while True:
            await wakeup.wait()
            wakeup.clear()
            while queue and self._broken is None:
                message, ticket, resends = queue.popleft()
                try:
                    # Returns at once unless the partition's batch is full, which is
                    # the producer's own backpressure.
                    future = await producer.send(
                        message.topic, message.value, key=message.key, headers=message.headers
                    )
                except (KafkaError, OSError) as exc:
                    self._send_failed(message, ticket, resends, exc)
                    continue
                future.add_done_callback(
                    lambda f, m=message, t=ticket, r=resends: self._acked(f, m, t, r)
                )

    def _acked(
        self, future: asyncio.Future[object], message: Outgoing, ticket: Ticket | None, resends: int
    ) -> None:
        if future.cancelled():
            self._send_failed(message, ticket, resends, asyncio.CancelledError())
            return
        exc = future.exception()
        if exc is not None:
            self._send_failed(message, ticket, resends, exc)
            return
        outcome = self._outcome_of.get(message.topic)
        if outcome is not None:
            self.acknowledged[outcome] += 1
        if ticket is not None:
            ticket.release()
        self._done_one()

    def _send_failed(
        self, message: Outgoing, ticket: Ticket | None, resends: int, exc: BaseException
    ) -> None:
        error = map_kafka_error(exc, topic=message.topic)
        if isinstance(exc, _RECORD_REFUSED) and message.topic != self.dlq_topic:
            # One record the broker will never take must not stop the partition:
            # its bounded dead letter takes its place (and its ticket).
            log.warning("%s refused one record, dead-lettering it: %s", message.topic, error)
            letter = oversized_reject(
                message,
                error.message,
                dlq_topic=self.dlq_topic,
                stage=self.stage,
                limits=self.limits,
            )
            self.rerouted += 1
            self._queue.append((letter, ticket, 0))
            if self._wakeup is not None:
                self._wakeup.set()
            return
        if isinstance(error, TransportRetriable) and resends < _MAX_RESENDS and not self._closed:
            log.warning("send to %s failed, sending again: %s", message.topic, error)
            self._queue.append((message, ticket, resends + 1))
            if self._wakeup is not None:
                self._wakeup.set()
            return
        # The ticket is deliberately not released: the offset stays uncommitted
        # and the record is read again after a restart.
        if self._broken is None:
            log.error("Kafka sink is broken: %s", error)
            self._broken = error.message
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
        self._done_one()

    def _done_one(self) -> None:
        self._pending -= 1
        if self._pending == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def flush(self) -> None:
        """Wait until every message written so far is acknowledged (or the sink broke)."""
        if self._producer is None:
            return
        while self._pending > 0 and self._broken is None:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        if self._broken is not None:
            # Undeliverable messages are never acknowledged: drop them from the count.
            self._queue.clear()

    async def aclose(self) -> None:
        """Flush, then stop the producer; safe to call twice."""
        if self._closed:
            return
        try:
            if self._broken is None:
                await self.flush()
        finally:
            self._closed = True
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
            if self._producer is not None:
                try:
                    await self._producer.stop()
                except (KafkaError, OSError) as exc:
                    log.warning("stopping the producer failed: %s", exc)

    @property
    def broken(self) -> str | None:
        """Why the sink stopped writing (None while it writes)."""
        return self._broken

    @property
    def pending(self) -> int:
        """Messages handed to the sink and not acknowledged yet."""
        return self._pending

    def healthy(self) -> tuple[bool, str]:
        """Return (ok, reason): False once sends keep failing (the sink is broken)."""
        if self._broken is not None:
            return False, f"producer is broken: {self._broken}"
        if self._closed:
            return False, "producer is closed"
        if self._producer is None:
            return False, "producer has not started"
        return True, f"producer connected ({self._pending} awaiting acknowledgement)"
