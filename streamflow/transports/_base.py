"""What every transport provides: records in (Source) and events out (Sink)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streamflow.errors import StreamflowError
from streamflow.events import Event
from streamflow.flow import CreditWindow, Ticket

__all__ = ["Emit", "FullSink", "Record", "Sink", "Source"]


@dataclass(slots=True)
class Record:
    """One record as a transport read it: bytes plus where they came from.

    A source of Python objects (:class:`~streamflow.transports.AsyncIterableSource`)
    leaves ``value`` empty and hands the object itself in ``item``.

    Attributes:
        value: the record's bytes.
        origin: a stable description of its position (``file:line``, ``topic/p/offset``);
            ids derived from it survive redelivery.
        key: the transport's key (Kafka key), if any.
        headers: transport headers.
        topic, partition, offset: the Kafka position, when there is one.
        item: the Python object read (a payload or an Event), for object sources.
    """

    value: bytes
    origin: str
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    item: Any = None


Emit = Callable[[Record, Ticket], None]


class Source(Protocol):
    """Reads records and emits each against one credit of the window."""

    name: str

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit records until the input ends or ``stop`` is set.

        Each record is emitted only after one credit was taken from ``window``;
        its Ticket gives the credit back when the event is done.
        """
        ...


class Sink(Protocol):
    """Writes finished events. Only :meth:`write` is required.

    Credit belongs to the runtime: when ``write`` returns (or, for a ``write``
    that returns an awaitable, when that completes), the runtime gives the
    event's credit back, so a sink written from this method list alone cannot
    stall the run. A sink whose writes become durable later (Kafka) says
    ``acknowledges = True`` and releases each event's ticket itself when the
    acknowledgement arrives.

    The optional methods, when a sink has them: ``reject(record, error,
    ticket)`` dead-letters a record that never became an event (default: the
    runtime logs it); ``abandon(event)`` takes an event still in flight when a
    stop ran out of time; ``flush()`` waits until everything written is
    durable; ``aclose()`` releases resources (the caller's job).
    """

    def write(self, event: Event) -> Awaitable[None] | None:
        """Write ``event`` where its outcome says (output, review, dead letters)."""
        ...


class FullSink(Sink, Protocol):
    """A sink with every optional method (see :class:`Sink`)."""

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Dead-letter a record that never became an event (with the reason)."""
        ...

    def abandon(self, event: Event) -> None:
        """Handle an event still in flight when shutdown ran out of time."""
        ...

    async def flush(self) -> None:
        """Wait until everything written is durable."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources."""
        ...
