"""Where a finished event goes and what it looks like on the wire (shared by sinks)."""

from __future__ import annotations

from dataclasses import dataclass

from streamflow.errors import StreamflowError
from streamflow.events import DeadLetter, ErrorInfo, Event, dumps, encode_event
from streamflow.transports._base import Record

__all__ = ["ID_HEADER", "TRACE_HEADER", "Outgoing", "outgoing_event", "outgoing_reject"]

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
