"""DeadLetter: what the dead-letter topic or file holds for one event."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from streamflow.events._model import ErrorInfo, Event

__all__ = ["DeadLetter"]


class DeadLetter(BaseModel):
    """An event that failed for good, with why, where, and what it was.

    Attributes:
        id: the event id (None when the record never decoded).
        stage: the stage that gave up on it (``decode`` for records that never decoded).
        error: the last error.
        attempts: attempts made.
        original: the record's original bytes as text, when it never decoded.
        origin: where the record was read (file:line, topic/partition/offset).
        event: the event as it entered the failing stage, for replay.
        dead_at: unix time it was dead-lettered.
    """

    id: str | None = None
    stage: str | None = None
    error: ErrorInfo
    attempts: int = 0
    original: str | None = None
    origin: str | None = None
    event: Event | None = None
    dead_at: float = Field(default_factory=time.time)
