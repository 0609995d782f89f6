"""How a pipeline takes a reviewer's rejection: which stage reworks it, and where the note goes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReviewPolicy"]


@dataclass(frozen=True)
class ReviewPolicy:
    """Where a rejected event goes back to, and where the reviewer's note is written.

    A rejection writes ``{"outcome": "fail", "reasons": ["reviewer: <note>"]}``
    into the payload at ``feedback_field`` and runs the event again from
    ``rework_stage``. Without a rework stage, the stage that parked the event
    runs again: the framework knows no stage names of its own.

    Attributes:
        rework_stage: the stage a rejected event goes back to (None: the stage that
            parked it). An event parked before it ever reached the rework stage
            continues after the stage that parked it instead, so no stage is skipped.
        feedback_field: the payload field that carries the note to the rework stage
            (the support example uses ``check``, which its generate step reads).

    Example:
        ``Pipeline(..., review=ReviewPolicy(rework_stage="generate", feedback_field="check"))``
    """

    rework_stage: str | None = None
    feedback_field: str = "feedback"
