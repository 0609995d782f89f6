"""Where a finished event goes and what it looks like on the wire (shared by sinks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from streamflow.errors import StreamflowError
from streamflow.events import DeadLetter, ErrorInfo, Event, dumps, encode_event, ticket_of
from streamflow.flow import Ticket
from streamflow.transports._base import Record

__all__ = [
    "ID_HEADER",
    "TRACE_HEADER",
    "Outgoing",
    "RoutingSink",
    "outgoing_event",
    "outgoing_reject",
]

ID_HEADER = "streamflow-id"
TRACE_HEADER = "streamflow-trace"


@dataclass(slots=True)
class Outgoing:
    """One message to produce: topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _trace_id(event: Event) -> bytes:
    origin = event._origin
    if isinstance(origin, Record):
        for name, value in origin.headers:
            if name == TRACE_HEADER:
                return value
    return event.id.encode()


def outgoing_event(
    event: Event, *, output_topic: str, review_topic: str, dlq_topic: str, stage: str
) -> Outgoing | None:
    """Return the message for ``event``: output, review or dead letter (None when filtered).

    Args:
        event: a finished event.
        output_topic: where ``ok`` events go.
        review_topic: where ``review`` events go.
        dlq_topic: where ``failed`` events go, as a :class:`DeadLetter`.
        stage: the stage writing (the dead letter's stage when the event does not say).

    Returns:
        The message, or None for a ``filtered`` event.
    """
    headers = [(ID_HEADER, event.id.encode()), (TRACE_HEADER, _trace_id(event))]
    key = event.key.encode() if event.key is not None else None
    if event.outcome == "ok":
        return Outgoing(output_topic, key, encode_event(event), headers)
    if event.outcome == "review":
        return Outgoing(review_topic, key, encode_event(event), headers)
    if event.outcome == "filtered":
        return None
    error = event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
    origin = event._origin if isinstance(event._origin, Record) else None
    letter = DeadLetter(
        id=event.id,
        stage=event._failed_in or error.step or stage,
        error=error,
        attempts=event.attempts,
        original=origin.value.decode("utf-8", "replace") if origin is not None else None,
        origin=origin.origin if origin is not None else None,
        event=event,
    )
    return Outgoing(dlq_topic, key, dumps(letter), headers)


def outgoing_reject(record: Record, error: StreamflowError, *, dlq_topic: str) -> Outgoing:
    """Return the dead letter for a record that never became an event."""
    letter = DeadLetter(
        id=error.event_id,
        stage="decode",
        error=ErrorInfo(type=type(error).__name__, message=str(error), step="decode"),
        original=record.value.decode("utf-8", "replace"),
        origin=record.origin,
    )
    headers = [(TRACE_HEADER, value) for name, value in record.headers if name == TRACE_HEADER]
    if error.event_id is not None:
        headers.insert(0, (ID_HEADER, error.event_id.encode()))
    return Outgoing(dlq_topic, record.key, dumps(letter), headers)


class RoutingSink(ABC):
    """What every topic sink shares: route each event by its outcome, count it, hand it on.

    Subclasses deliver a message and release its ticket once the write is durable
    (``acknowledges``: the runtime leaves credit to them, so a source commits only
    what the broker acknowledged).

    Args:
        output_topic: where ``ok`` events go.
        dlq_topic: where dead letters go.
        review_topic: where ``review`` events go.
        stage: the stage writing (dead-letter context).
    """

    acknowledges = True

    def __init__(self, *, output_topic: str, dlq_topic: str, review_topic: str, stage: str) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.review_topic = review_topic
        self.stage = stage
        self.written = {"ok": 0, "review": 0, "dead_lettered": 0, "filtered": 0}

    def write(self, event: Event) -> None:
        """Send ``event`` where its outcome says; a filtered event only returns its credit."""
        message = outgoing_event(
            event,
            output_topic=self.output_topic,
            review_topic=self.review_topic,
            dlq_topic=self.dlq_topic,
            stage=self.stage,
        )
        ticket = ticket_of(event)
        if message is None:
            self.written["filtered"] += 1
            if ticket is not None:
                ticket.release()
            return
        self.written["dead_lettered" if event.outcome == "failed" else event.outcome] += 1
        self._deliver(message, ticket)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Dead-letter a record that never decoded, with its original bytes."""
        self.written["dead_lettered"] += 1
        self._deliver(outgoing_reject(record, error, dlq_topic=self.dlq_topic), ticket)

    def abandon(self, event: Event) -> None:
        """Leave ``event`` unreleased: its offset stays uncommitted, so it is redelivered."""
        del event

    @abstractmethod
    def _deliver(self, message: Outgoing, ticket: Ticket | None) -> None:
        """Write ``message``; release ``ticket`` once the write is durable."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, if the transport needs to."""

    @abstractmethod
    async def aclose(self) -> None:
        """Flush and release resources."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
