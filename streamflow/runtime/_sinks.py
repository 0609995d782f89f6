"""The runtime's side of a sink: it returns each event's credit, so no sink can stall a run.

A sink only has to write (see :class:`~streamflow.transports.Sink`). When its
``write`` returns, or the awaitable it returned completes, the event's credit
goes back to the window. A sink that says ``acknowledges = True`` (the topic
sinks) releases each ticket itself once the broker acknowledged the write,
which is what lets a Kafka source commit only what is durable.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streamflow.errors import StreamflowError
from streamflow.events import Event, ticket_of
from streamflow.flow import Ticket
from streamflow.transports import Record, Sink

__all__ = ["SinkDriver"]

log = logging.getLogger("streamflow.runtime")


class SinkDriver:
    """Calls a sink's methods for the runner and gives credit back after each one.

    Args:
        sink: the sink; only ``write`` is required.
        fail: called with the error of an awaited write that failed (it stops the run).
    """

    def __init__(self, sink: Sink, fail: Callable[[Exception], None]) -> None:
        self.sink = sink
        self.acknowledges = bool(getattr(sink, "acknowledges", False))
        self._write = sink.write
        self._reject: Callable[[Record, StreamflowError, Ticket], None] | None = getattr(
            sink, "reject", None
        )
        self._abandon: Callable[[Event], None] | None = getattr(sink, "abandon", None)
        self._flush: Callable[[], Awaitable[None]] | None = getattr(sink, "flush", None)
        self._fail = fail
        self._pending: set[asyncio.Future[Any]] = set()

    def write(self, event: Event, ticket: Ticket | None) -> None:
        """Write ``event``; its credit returns when the write does (or its awaitable).

        Args:
            event: the event to write.
            ticket: its ticket (``ticket_of(event)``), which the caller has at hand.
        """
        result = self._write(event)
        if self.acknowledges:
            return
        if result is None or not inspect.isawaitable(result):
            if ticket is not None:
                ticket.release()
            return
        pending = asyncio.ensure_future(result)
        self._pending.add(pending)
        pending.add_done_callback(lambda done: self._written(done, ticket))

    def _written(self, done: asyncio.Future[Any], ticket: Ticket | None) -> None:
        self._pending.discard(done)
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            # The credit stays taken: the write did not happen, and the run stops.
            self._fail(error if isinstance(error, Exception) else RuntimeError(repr(error)))
            return
        if ticket is not None:
            ticket.release()

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Dead-letter a record that never became an event (or log it, for a write-only sink)."""
        if self._reject is not None:
            self._reject(record, error, ticket)
        else:
            log.warning("dropped %s: %s (the sink has no reject method)", record.origin, error)
        if not self.acknowledges:
            ticket.release()

    def abandon(self, event: Event) -> None:
        """Hand over an event a stop could not finish."""
        if self._abandon is not None:
            self._abandon(event)
        if not self.acknowledges:
            ticket = ticket_of(event)
            if ticket is not None:
                ticket.release()

    async def flush(self) -> None:
        """Wait for awaited writes, then the sink's own flush."""
        while self._pending:
            await asyncio.wait(set(self._pending))
        if self._flush is not None:
            await self._flush()
