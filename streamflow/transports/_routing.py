"""Where a finished event goes and what it looks like on the wire (shared by sinks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from streamflow.errors import EncodeError, StreamflowError
from streamflow.events import (
    DEFAULT_LIMITS,
    ErrorInfo,
    Event,
    RecordLimits,
    encode_bounded,
    encode_dead_letter,
    failing_step_attempts,
    make_dead_letter,
    ticket_of,
)
from streamflow.flow import Ticket
from streamflow.transports._base import Record

__all__ = [
    "EVENT_HEADER",
    "ID_HEADER",
    "TRACE_HEADER",
    "Outgoing",
    "RoutingSink",
    "has_event_header",
    "outgoing_event",
    "outgoing_reject",
]

ID_HEADER = "streamflow-id"
TRACE_HEADER = "streamflow-trace"
EVENT_HEADER = "streamflow-event"
"""Marks a record as an event written by streamflow (its value names the writer).

Stages after the first read only records that carry it. On the input topic it
only means "decode the envelope": the event still runs every stage from the
first, as a new input would, so a producer gains nothing by setting it."""


def has_event_header(headers: tuple[tuple[str, bytes], ...]) -> bool:
    """True when a record's headers mark it as a streamflow event."""
    return any(name == EVENT_HEADER for name, _ in headers)


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
    event: Event,
    *,
    output_topic: str,
    review_topic: str,
    dlq_topic: str,
    stage: str,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> Outgoing | None:
    """Return the message for ``event``: output, review or dead letter (None when filtered).

    An ``ok`` or ``review`` event that cannot be written (not serialisable, or
    above ``max_record_bytes``) becomes a dead letter with the reason instead.

    Args:
        event: a finished event.
        output_topic: where ``ok`` events go.
        review_topic: where ``review`` events go.
        dlq_topic: where ``failed`` events go, as a :class:`DeadLetter`.
        stage: the stage writing (the dead letter's stage when the event does not say).
        limits: the size bounds of what is written.

    Returns:
        The message, or None for a ``filtered`` event.
    """
    headers = [
        (ID_HEADER, event.id.encode()),
        (TRACE_HEADER, _trace_id(event)),
        (EVENT_HEADER, stage.encode()),
    ]
    key = event.key.encode() if event.key is not None else None
    outcome = event.outcome
    if outcome == "filtered":
        return None
    if outcome in ("ok", "review"):
        try:
            value = encode_bounded(event, limits)
        except EncodeError as exc:
            error = ErrorInfo(type=type(exc).__name__, message=str(exc), step="encode")
            return Outgoing(dlq_topic, key, _letter(event, error, stage, limits), headers)
        return Outgoing(output_topic if outcome == "ok" else review_topic, key, value, headers)
    error = event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
    return Outgoing(dlq_topic, key, _letter(event, error, stage, limits), headers)


def _letter(event: Event, error: ErrorInfo, stage: str, limits: RecordLimits) -> bytes:
    origin = event._origin if isinstance(event._origin, Record) else None
    letter = make_dead_letter(
        event_id=event.id,
        stage=event._failed_in or error.step or stage,
        error=error,
        attempts=failing_step_attempts(event),
        original=origin.value if origin is not None else None,
        origin=origin.origin if origin is not None else None,
        event=event,
        limits=limits,
    )
    return encode_dead_letter(letter, limits)


def outgoing_reject(
    record: Record,
    error: StreamflowError,
    *,
    dlq_topic: str,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> Outgoing:
    """Return the dead letter for a record that never became an event."""
    letter = make_dead_letter(
        event_id=error.event_id,
        stage="decode",
        error=ErrorInfo(type=type(error).__name__, message=str(error), step="decode"),
        original=record.value,
        origin=record.origin,
        limits=limits,
    )
    headers = [(TRACE_HEADER, value) for name, value in record.headers if name == TRACE_HEADER]
    if error.event_id is not None:
        headers.insert(0, (ID_HEADER, error.event_id.encode()))
    return Outgoing(dlq_topic, record.key, encode_dead_letter(letter, limits), headers)


def oversized_reject(
    message: Outgoing,
    reason: str,
    *,
    dlq_topic: str,
    stage: str,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> Outgoing:
    """Return a dead letter for a message the broker refused for itself (too large, say).

    Args:
        message: the refused message.
        reason: what the broker said.
        dlq_topic: the dead-letter topic.
        stage: the stage that wrote it.
        limits: the bounds of the letter.

    Returns:
        A bounded dead letter carrying the head of the refused value, its size and hash.
    """
    ids = [value for name, value in message.headers if name == ID_HEADER]
    letter = make_dead_letter(
        event_id=ids[0].decode("utf-8", "replace") if ids else None,
        stage=stage,
        error=ErrorInfo(
            type="WriteRefused",
            message=f"writing to {message.topic} failed: {reason}",
            step="write",
        ),
        original=message.value,
        origin=message.topic,
        limits=limits,
    )
    headers = [(name, value) for name, value in message.headers if name != EVENT_HEADER]
    return Outgoing(dlq_topic, message.key, encode_dead_letter(letter, limits), headers)


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
        limits: the size bounds of what is written.
    """

    acknowledges = True

    def __init__(
        self,
        *,
        output_topic: str,
        dlq_topic: str,
        review_topic: str,
        stage: str,
        limits: RecordLimits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.review_topic = review_topic
        self.stage = stage
        self.written = {"ok": 0, "review": 0, "dead_lettered": 0, "filtered": 0}
        self.unwritable: Counter[str] = Counter()

    def write(self, event: Event) -> None:
        """Send ``event`` where its outcome says; a filtered event only returns its credit.

        An ``ok`` or ``review`` event that cannot be written goes to the dead letters
        instead, counted in :attr:`unwritable` under the outcome it had.
        """
        message = outgoing_event(
            event,
            output_topic=self.output_topic,
            review_topic=self.review_topic,
            dlq_topic=self.dlq_topic,
            stage=self.stage,
            limits=self.limits,
        )
        ticket = ticket_of(event)
        if message is None:
            self.written["filtered"] += 1
            if ticket is not None:
                ticket.release()
            return
        written = "dead_lettered" if message.topic == self.dlq_topic else event.outcome
        if written != event.outcome and event.outcome != "failed":
            self.unwritable[event.outcome] += 1
        self.written[written] += 1
        self._deliver(message, ticket)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Dead-letter a record that never decoded, with its original bytes."""
        self.written["dead_lettered"] += 1
        self._deliver(
            outgoing_reject(record, error, dlq_topic=self.dlq_topic, limits=self.limits), ticket
        )

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
