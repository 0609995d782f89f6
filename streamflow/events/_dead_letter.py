"""DeadLetter: what the dead-letter topic or file holds for one event, always within bounds."""

from __future__ import annotations

import base64
import hashlib
import time

from pydantic import BaseModel, Field

from streamflow.events._codec import DEFAULT_LIMITS, dumps
from streamflow.events._limits import RecordLimits
from streamflow.events._model import ErrorInfo, Event

__all__ = ["DeadLetter", "encode_dead_letter", "failing_step_attempts", "make_dead_letter"]

# An error message longer than this is cut: some exceptions quote the whole value.
_MAX_MESSAGE_CHARS = 4096


class DeadLetter(BaseModel):
    """An event that failed for good, with why, where, and what it was.

    Attributes:
        id: the event id (for a record that never decoded: its JSON's id, if it had one).
        stage: the stage that gave up on it (``decode`` for records that never decoded).
        error: the last error.
        attempts: attempts the failing step made (its retries included), not a count
            over every step the event went through.
        original: the record's original bytes as text, when they are valid UTF-8.
        original_base64: the record's original bytes in base64, when they are not.
        original_size: the original's full size in bytes.
        original_sha256: the original's SHA-256 (hex), when the kept part is truncated.
        truncated: True when ``original`` or ``original_base64`` holds only the first
            ``max_original_bytes`` of the record.
        origin: where the record was read (file:line, topic/partition/offset).
        event: the event as it entered the failing stage, for replay.
        event_omitted: why ``event`` is missing although there was one (it could not
            be serialised, or would not fit ``max_record_bytes``).
        dead_at: unix time it was dead-lettered.
    """

    id: str | None = None
    stage: str | None = None
    error: ErrorInfo
    attempts: int = 0
    original: str | None = None
    original_base64: str | None = None
    original_size: int | None = None
    original_sha256: str | None = None
    truncated: bool = False
    origin: str | None = None
    event: Event | None = None
    event_omitted: str | None = None
    dead_at: float = Field(default_factory=time.time)

    @classmethod
    def of(
        cls,
        event: Event,
        *,
        stage: str | None = None,
        original: bytes | None = None,
        origin: str | None = None,
        limits: RecordLimits = DEFAULT_LIMITS,
    ) -> DeadLetter:
        """The dead letter of a failed ``event``.

        Args:
            event: the failed event.
            stage: the stage that gave up (default: where the event failed, else
                its error's step).
            original: the record's bytes, when the sink has them.
            origin: where the record was read.
            limits: the bounds (see :func:`make_dead_letter`).

        Returns:
            The dead letter; ``attempts`` is the failing step's.
        """
        error = event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
        return make_dead_letter(
            event_id=event.id,
            stage=stage or event._failed_in or error.step,
            error=error,
            attempts=failing_step_attempts(event),
            original=original,
            origin=origin,
            event=event,
            limits=limits,
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


def make_dead_letter(
    *,
    error: ErrorInfo,
    event_id: str | None = None,
    stage: str | None = None,
    attempts: int = 0,
    original: bytes | None = None,
    origin: str | None = None,
    event: Event | None = None,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> DeadLetter:
    """Build a dead letter whose original bytes are kept within ``limits``.

    Valid UTF-8 is kept as text, anything else in base64, so no byte is ever
    replaced. Past ``max_original_bytes`` only the head is kept, with the full
    size and a SHA-256 of the whole, so the letter still identifies the record.

    Args:
        error: why it failed.
        event_id: the event's (or the record's) id.
        stage: the stage that gave up (``decode`` before any stage).
        attempts: attempts made.
        original: the record's bytes, when it never became an event (or for context).
        origin: where the record was read.
        event: the event, when there was one.
        limits: the bounds.

    Returns:
        The dead letter (encode it with :func:`encode_dead_letter`).
    """
    if len(error.message) > _MAX_MESSAGE_CHARS:
        error = error.model_copy(
            update={"message": error.message[:_MAX_MESSAGE_CHARS] + " ...(cut)"}
        )
    letter = DeadLetter(
        id=event_id, stage=stage, error=error, attempts=attempts, origin=origin, event=event
    )
    if original is None:
        return letter
    keep = limits.original_bytes
    head = original[:keep]
    letter.original_size = len(original)
    if len(original) > keep:
        letter.truncated = True
        letter.original_sha256 = hashlib.sha256(original).hexdigest()
    try:
        letter.original = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut_char = exc.start >= len(head) - 3 and exc.reason.startswith("unexpected end")
        if letter.truncated and cut_char:
            # The cut split a character: keep the text up to it.
            letter.original = head[: exc.start].decode("utf-8", "replace")
        else:
            letter.original_base64 = base64.b64encode(head).decode("ascii")
    return letter


def encode_dead_letter(letter: DeadLetter, limits: RecordLimits = DEFAULT_LIMITS) -> bytes:
    """Encode ``letter`` so that it always fits ``max_record_bytes``.

    The event it carries is dropped (and the reason recorded in
    ``event_omitted``) when it cannot be serialised or would make the letter too
    large; the error, origin and the bounded original always remain.

    Args:
        letter: the dead letter.
        limits: the bounds.

    Returns:
        The letter's JSON bytes, at most ``max_record_bytes`` long.
    """
    try:
        value = dumps(letter)
    except (TypeError, ValueError, RecursionError) as exc:  # types or depth
        why = f"the event cannot be serialised: {exc}"
    else:
        if len(value) <= limits.max_record_bytes:
            return value
        why = (
            f"the letter with its event is {len(value)} bytes, above max_record_bytes="
            f"{limits.max_record_bytes}"
        )
    slim = letter.model_copy(update={"event": None, "event_omitted": why})
    try:
        value = dumps(slim)
    except (TypeError, ValueError, RecursionError):
        value = b""
    if 0 < len(value) <= limits.max_record_bytes:
        return value
    # Only the error and the origin left: both are bounded.
    bare = DeadLetter(
        id=letter.id,
        stage=letter.stage,
        error=letter.error,
        attempts=letter.attempts,
        original_size=letter.original_size,
        original_sha256=letter.original_sha256,
        truncated=letter.original is not None or letter.original_base64 is not None,
        origin=letter.origin,
        event_omitted=why,
        dead_at=letter.dead_at,
    )
    return dumps(bare)
