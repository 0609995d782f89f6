"""What every transport provides: records in (Source) and events out (Sink)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from streamflow.errors import StreamflowError
from streamflow.events import Event
from streamflow.flow import CreditWindow, Ticket

__all__ = ["Emit", "Record", "Sink", "Source"]


@dataclass(slots=True)
class Record:
    """One record as a transport read it: bytes plus where they came from.

    Attributes:
        value: the record's bytes.
        origin: a stable description of its position (``file:line``, ``topic/p/offset``);
            ids derived from it survive redelivery.
        key: the transport's key (Kafka key), if any.
        headers: transport headers.
        topic, partition, offset: the Kafka position, when there is one.
    """

    value: bytes
    origin: str
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


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
    """Writes finished events; releases each event's ticket once the write is durable."""

    def write(self, event: Event) -> str | None:
        """Write ``event`` where its outcome says (output, review, dead letters).

        Returns:
            Where it went (``ok``, ``review``, ``dead_lettered``, ``filtered``) when
            that differs from the event's outcome (an event that cannot be written
            is dead-lettered); None means as its outcome says.
        """
        ...

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
