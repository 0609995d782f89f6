"""Small sources and sinks shared by the runtime tests."""

from __future__ import annotations

from streamflow.errors import StreamflowError
from streamflow.events import Event, ticket_of
from streamflow.flow import Ticket
from streamflow.transports import Record


def lines(n: int, prefix: str = "t") -> list[bytes]:
    """``n`` JSON input lines with ids ``{prefix}0`` ...``."""
    return [f'{{"id":"{prefix}{i}","text":"hello {i}"}}'.encode() for i in range(n)]


class ListSink:
    """Keeps what it is given in lists and releases each ticket itself (a whole Sink)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.rejected: list[tuple[Record, StreamflowError]] = []
        self.abandoned: list[Event] = []

    def write(self, event: Event) -> None:
        self.events.append(event)
        ticket = ticket_of(event)
        if ticket is not None:
            ticket.release()

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        self.rejected.append((record, error))
        ticket.release()

    def abandon(self, event: Event) -> None:
        self.abandoned.append(event)
        ticket = ticket_of(event)
        if ticket is not None:
            ticket.release()

    async def flush(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
