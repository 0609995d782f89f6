"""Sources of Python objects and a collecting sink, for applications that embed a pipeline.

A payload (a dict or the pipeline's input model) or a whole :class:`Event`
goes in as it is, with no bytes in between: the record carries the object
in ``item`` and the runtime validates it against the pipeline's input model.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Final

from streamflow.errors import CapacityExceeded, ConfigError, StreamflowError
from streamflow.events import Event
from streamflow.flow import CreditWindow, Ticket
from streamflow.transports._base import Emit, Record

__all__ = [
    "END_OF_INPUT",
    "AsyncIterableSource",
    "CollectingSink",
    "QueueSource",
    "next_or_stop",
    "object_record",
]


class _EndOfInput:
    def __repr__(self) -> str:
        return "END_OF_INPUT"


END_OF_INPUT: Final = _EndOfInput()
"""Put this on a :class:`QueueSource`'s queue to end its input."""


async def next_or_stop(next_item: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for ``next_item`` or ``stop``; True if the item came first."""
    if next_item.done():
        return True
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((next_item, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if next_item.done():
        return True
    next_item.cancel()
    return False


def object_record(item: object, source: str) -> Record:
    """The record for one Python object read by ``source``.

    An object has no position to derive a stable id from, so its origin is
    unique; an id field in the payload (the pipeline's ``id_field``) still wins.
    """
    return Record(b"", f"{source}:{uuid.uuid4().hex}", item=item)


class AsyncIterableSource:
    """Emits the objects of an async iterable (payloads or Events), each against one credit.

    Args:
        items: the async iterable; it is read only as fast as credit allows.
        name: names the source in origins and logs.
    """

    def __init__(self, items: AsyncIterable[Any], *, name: str = "objects") -> None:
        self.items = items
        self.name = name

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit every object until the iterable ends or ``stop`` is set.

        Raises:
            StreamflowError: the iterable raised (chained as ``__cause__``).
        """
        iterator: AsyncIterator[Any] = aiter(self.items)
        while not stop.is_set():
            # Credit first, then the next object: nothing is read that cannot go in.
            if window.available < 1 and not await window.wait():
                continue
            next_item = asyncio.ensure_future(anext(iterator))
            if not await next_or_stop(next_item, stop):
                break
            try:
                item = next_item.result()
            except StopAsyncIteration:
                break
            except Exception as exc:
                # The input broke, not one event: the run stops with the reason.
                raise StreamflowError(
                    f"input {self.name} raised {type(exc).__name__}: {exc}"
                ) from exc
            if stop.is_set():
                break
            window.take()
            emit(object_record(item, self.name), Ticket(window))


class QueueSource:
    """Emits objects put on an :class:`asyncio.Queue` until :data:`END_OF_INPUT` or a stop.

    Args:
        queue: the queue the application puts payloads or Events on (bound it:
            ``asyncio.Queue(maxsize=...)``, so producers wait when the pipeline is full).
        name: names the source in origins and logs.
    """

    def __init__(self, queue: asyncio.Queue[Any], *, name: str = "queue") -> None:
        self.queue = queue
        self.name = name

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit objects from the queue until :data:`END_OF_INPUT` or ``stop``."""
        while not stop.is_set():
            if window.available < 1 and not await window.wait():
                continue
            next_item = asyncio.ensure_future(self.queue.get())
            if not await next_or_stop(next_item, stop):
                break
            item = next_item.result()
            self.queue.task_done()
            if item is END_OF_INPUT:
                break
            window.take()
            emit(object_record(item, self.name), Ticket(window))


class CollectingSink:
    """Keeps every finished event in memory, in the order they finished.

    Credit is the runtime's to return, so this sink only collects. Records
    that never became events (they did not validate) are kept in
    :attr:`rejected` with their error.

    Args:
        capacity: the most events kept; one more fails the run with
            :class:`~streamflow.errors.CapacityExceeded` (a bound, not a silent drop).

    Attributes:
        events: every finished event (ok, review, failed, filtered).
        rejected: ``(record, error)`` for inputs that never became events.
        abandoned: events still in flight when a stop ran out of time.
    """

    def __init__(self, *, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ConfigError("CollectingSink capacity must be >= 1")
        self.capacity = capacity
        self.events: list[Event] = []
        self.rejected: list[tuple[Record, StreamflowError]] = []
        self.abandoned: list[Event] = []

    def write(self, event: Event) -> None:
        """Keep ``event``."""
        if len(self.events) >= self.capacity:
            raise CapacityExceeded(
                f"CollectingSink holds its capacity of {self.capacity} events; "
                "raise capacity= or write to a file or topic sink"
            )
        self.events.append(event)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Keep a record that never became an event, with its error."""
        del ticket  # the runtime returns its credit
        self.rejected.append((record, error))

    def abandon(self, event: Event) -> None:
        """Keep an event a stop could not finish."""
        self.abandoned.append(event)

    def outcomes(self) -> Counter[str]:
        """Count the finished events by outcome."""
        return Counter(event.outcome for event in self.events)

    def by_outcome(self, outcome: str) -> list[Event]:
        """Return the finished events whose outcome is ``outcome``."""
        return [event for event in self.events if event.outcome == outcome]

    def payloads(self) -> list[Any]:
        """Return the payloads of the ``ok`` events."""
        return [event.payload for event in self.events if event.outcome == "ok"]
