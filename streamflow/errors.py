"""The one error tree of streamflow.

Every exception streamflow raises is a :class:`StreamflowError`. Each branch
tells the caller what to do next::

    StreamflowError
    ├── ConfigError               fail at start; the message names the fix
    │   └── TopologyError         the pipeline's shape is invalid (ordering, names)
    ├── EventError                one event is bad: dead-letter it, keep running
    │   ├── DecodeError           bytes that are not JSON, or not an event
    │   ├── PayloadInvalid        the payload fails the pipeline's input model
    │   ├── EncodeError           an event that cannot be written (types, depth, size)
    │   ├── StepFailed            a step failed for good (not retriable)
    │   └── EventNotAnswered      flow.process got no output for the event:
    │       ├── EventFailed       it was dead-lettered (carries the dead letter)
    │       ├── EventParked       it was parked for review (carries the reason)
    │       └── EventFiltered     a filter took it out of the flow
    ├── RetriableError            transient: retry with backoff (``retry_after`` hint)
    │   ├── StepTimeout           a step ran past its timeout and was cancelled
    │   ├── RateLimited           the endpoint said 429
    │   ├── Unavailable           the endpoint or broker is briefly unavailable
    │   ├── CircuitOpen           a circuit breaker refused the call without trying it
    │   └── FlowFull              flow.process(wait=False): the window is full right now
    ├── CapacityExceeded          a bounded buffer was offered more than its bound
    ├── FlowClosed                the flow is closed (or stopped on an error): no new events
    └── TransportError            the transport underneath (topic/partition/offset)
        ├── TransportClosed       closed on purpose; stop using it
        ├── TransportBroken       lost (broker gone, fenced, group lost); restart
        └── TransportRetriable    a transport hiccup worth retrying (also a RetriableError)

Third-party exceptions are wrapped at the boundary with ``raise ... from exc``.
Context (stage, event id, topic, partition, offset) travels as attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # events import this module; the types are only for annotations
    from streamflow.events import DeadLetter, Event

__all__ = [
    "CapacityExceeded",
    "CircuitOpen",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "EventError",
    "EventFailed",
    "EventFiltered",
    "EventNotAnswered",
    "EventParked",
    "FlowClosed",
    "FlowFull",
    "PayloadInvalid",
    "RateLimited",
    "RetriableError",
    "StepFailed",
    "StepTimeout",
    "StreamflowError",
    "TopologyError",
    "TransportBroken",
    "TransportClosed",
    "TransportError",
    "TransportRetriable",
    "Unavailable",
]


class StreamflowError(Exception):
    """Root of every error streamflow raises.

    Attributes:
        stage: the stage (or step) the error happened in, when known.
        event_id: the id of the event concerned, when known.
    """

    retriable: bool = False

    def __init__(
        self, message: str, *, stage: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.event_id = event_id


class ConfigError(StreamflowError):
    """Bad configuration or arguments; raised at start with the fix in the message."""


class TopologyError(ConfigError):
    """The pipeline's shape cannot work as declared (for example ordering)."""


class EventError(StreamflowError):
    """One event cannot be processed; it goes to the dead letters, the run goes on."""


class DecodeError(EventError):
    """The bytes of a record are not valid JSON or not a valid event."""


class EncodeError(EventError):
    """A finished event cannot be written: not serialisable, too deep, or too large."""


class PayloadInvalid(EventError):
    """The payload does not validate against the pipeline's input model."""


class StepFailed(EventError):
    """A step failed for good: retrying will not help."""


class EventNotAnswered(EventError):
    """``flow.process`` has no output for this event; the subclass says why.

    Attributes:
        event: the finished event (None when the input never became an event).
    """

    def __init__(self, message: str, *, event: Event | None = None, stage: str | None = None):
        super().__init__(message, stage=stage, event_id=event.id if event is not None else None)
        self.event = event


class EventFailed(EventNotAnswered):
    """The event was dead-lettered; :attr:`dead_letter` says where, why and after how many tries.

    Attributes:
        dead_letter: the dead letter, as a dead-letter sink would have written it.
    """

    def __init__(self, message: str, *, dead_letter: DeadLetter, event: Event | None = None):
        super().__init__(message, event=event, stage=dead_letter.stage)
        self.dead_letter = dead_letter
        if event is None:
            self.event_id = dead_letter.id


class EventParked(EventNotAnswered):
    """The event was parked for a person to review; :attr:`reason` says why.

    Attributes:
        reason: the reason the step gave.
    """

    def __init__(self, message: str, *, event: Event, reason: str | None) -> None:
        super().__init__(message, event=event)
        self.reason = reason


class EventFiltered(EventNotAnswered):
    """A filter took the event out of the flow, so there is no output."""


class RetriableError(StreamflowError):
    """A transient failure: retry with backoff.

    Attributes:
        retry_after: seconds the other side asked us to wait, when it said so.
    """

    retriable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        stage: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, stage=stage, event_id=event_id)
        self.retry_after = retry_after


class StepTimeout(RetriableError):
    """A step ran longer than its timeout; the call was cancelled."""


class RateLimited(RetriableError):
    """The endpoint refused the call for now (HTTP 429)."""


class Unavailable(RetriableError):
    """The endpoint is briefly unavailable (HTTP 5xx, connection refused)."""


class CircuitOpen(RetriableError):
    """A circuit breaker is open: the call failed fast without reaching the endpoint.

    ``retry_after`` is the time left until the breaker lets a probe through.
    """


class FlowFull(RetriableError):
    """``flow.process(..., wait=False)``: the window is full; ``retry_after`` suggests when."""


class FlowClosed(StreamflowError):
    """The flow is closed, or stopped on a fatal error (chained as ``__cause__``)."""


class CapacityExceeded(StreamflowError):
    """A bounded buffer was offered more items than its capacity."""


class TransportError(StreamflowError):
    """An error of the transport underneath.

    Attributes:
        topic, partition, offset: where it happened, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message, stage=stage)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class TransportClosed(TransportError):
    """The transport was closed on purpose; it cannot be used any more."""


class TransportBroken(TransportError):
    """The transport was lost (broker unreachable, group lost); restart the worker."""


class TransportRetriable(TransportError):
    """A transport hiccup that is worth retrying."""

    retriable = True
