"""What every AI step shares: its trace record and how it parks or fails an event."""

from __future__ import annotations

import time
from typing import Any

from streamflow.errors import StepFailed
from streamflow.events import Event, StepRecord

__all__ = ["fail", "park_for_review", "step_record"]


def step_record(
    step: str,
    *,
    outcome: str = "ok",
    model: str | None = None,
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float | None = 0.0,
    detail: str | None = None,
) -> StepRecord:
    """Build the step's own trace record; map_async fills in its timing and attempt."""
    return StepRecord.timed(
        step,
        time.time(),
        0.0,
        1,
        outcome,
        detail,
        model=model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost_usd,
    )


def park_for_review(event: Event, payload: Any, record: StepRecord, reason: str) -> Event:
    """Return the event with its new payload, headed for a person with ``reason``."""
    return event.traced(record, payload=payload, outcome="review", reason=reason)


def fail(event: Event, payload: Any, record: StepRecord, step: str, reason: str) -> Event:
    """Return the event with its new payload, headed for the dead letters with ``reason``."""
    error = StepFailed(reason, stage=step, event_id=event.id)
    return event.with_payload(payload).failed(error, step, record)
