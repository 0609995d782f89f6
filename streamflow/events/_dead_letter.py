"""DeadLetter: what the dead-letter topic or file holds for one event."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from streamflow.events._model import ErrorInfo, Event

__all__ = ["DeadLetter", "failing_step_attempts"]


class DeadLetter(BaseModel):
    """An event that failed for good, with why, where, and what it was.

    Attributes:
        id: the event id (None when the record never decoded).
        stage: the stage that gave up on it (``decode`` for records that never decoded).
        error: the last error.
        attempts: attempts the failing step made (its retries included), not a count
            over every step the event went through.
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

    @classmethod
    def of(
        cls,
        event: Event,
        *,
        stage: str | None = None,
        original: str | None = None,
        origin: str | None = None,
    ) -> DeadLetter:
        """The dead letter of a failed ``event``.

        Args:
            event: the failed event.
            stage: the stage that gave up (default: where the event failed, else
                its error's step).
            original: the record's original text, when the sink has it.
            origin: where the record was read.

        Returns:
            The dead letter; ``attempts`` is the failing step's.
        """
        error = event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
        return cls(
            id=event.id,
            stage=stage or event._failed_in or error.step,
            error=error,
            attempts=failing_step_attempts(event),
            original=original,
            origin=origin,
            event=event,
        )


def failing_step_attempts(event: Event) -> int:
    """How many attempts the step that failed ``event`` made (1 when it left no record).

    The step's trace record holds its attempt count; ``event.attempts`` counts
    the attempts of every step the event went through.
    """
    step = event.error.step if event.error is not None else None
    for record in reversed(event.trace):
        if record.outcome == "failed" and (step is None or record.step == step):
            return record.attempt
    return 1
