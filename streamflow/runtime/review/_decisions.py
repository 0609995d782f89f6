"""Decisions on parked events: pure functions from a parked event to what happens to it.

A decision is keyed by the event id and the time it was parked, so an event
parked again — after a rework, or by a later run onto the same files — waits
for a new decision, while a decision on an earlier parking stays where it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from streamflow.errors import ConfigError
from streamflow.events import Event, StepRecord
from streamflow.runtime.review._policy import ReviewPolicy

if TYPE_CHECKING:
    from streamflow.runtime._pipeline import Pipeline

__all__ = [
    "REVIEW_STEP",
    "Decision",
    "DecisionKind",
    "approve_target",
    "approved",
    "choose",
    "decide",
    "decisions_path",
    "decisions_topic",
    "parked_at",
    "parked_only",
    "parked_stage",
    "pending",
    "policy_of",
    "reject_target",
    "rejected",
    "review_round",
]

REVIEW_STEP = "review"
"""The step name of the trace record a decision adds."""

DecisionKind = Literal["approved", "rejected"]


class Decision(BaseModel):
    """One person's decision on one parked event (a line of the decisions log).

    Attributes:
        id: the event id.
        decision: ``approved`` or ``rejected``.
        note: the reviewer's note (the feedback, for a rejection).
        at: unix time of the decision.
        round: review records the event carried when decided (0 for its first review).
        parked_at: when the decided event was parked (unix time; None in logs written
            before it was recorded, which then match by round).
    """

    id: str
    decision: DecisionKind
    note: str | None = None
    at: float = Field(default_factory=time.time)
    round: int = 0
    parked_at: float | None = None

    def covers(self, event: Event) -> bool:
        """Return whether this decision was taken on this parking of ``event``."""
        if self.id != event.id:
            return False
        if self.parked_at is None:
            return self.round == review_round(event)
        return self.parked_at == parked_at(event)


def policy_of(pipeline: Pipeline) -> ReviewPolicy:
    """Return the pipeline's review policy (the defaults when it sets none)."""
    policy = getattr(pipeline, "review", None)
    return policy if isinstance(policy, ReviewPolicy) else ReviewPolicy()


def review_round(event: Event) -> int:
    """Return how many review decisions ``event`` carries (its current review round).

    Args:
        event: a parked (or decided) event.

    Returns:
        The number of review records in its trace.
    """
    return sum(1 for record in event.trace if record.step == REVIEW_STEP)


def parked_at(event: Event) -> float:
    """Return when ``event`` was parked: the end of its last step (its creation if none).

    Args:
        event: a parked event.

    Returns:
        The time, in seconds since the epoch.
    """
    for record in reversed(event.trace):
        if record.step != REVIEW_STEP:
            return round(record.started_at + record.duration_s, 6)
    return event.created_at


def parked_stage(pipeline: Pipeline, event: Event) -> str | None:
    """Return the stage whose step parked ``event`` (None when its trace names none).

    Args:
        pipeline: the pipeline the event ran through.
        event: an event from the review queue.

    Returns:
        The name of the stage that ran the event's last step.
    """
    owner: dict[str, str] = {}
    for stage in pipeline.stages:
        for op in stage.op.walk():
            owner.setdefault(op.name, stage.name)
        owner.setdefault(stage.name, stage.name)
    for record in reversed(event.trace):
        if record.step != REVIEW_STEP and record.step in owner:
            return owner[record.step]
    return None


def _next_stage(pipeline: Pipeline, stage: str | None) -> str | None:
    """The stage after ``stage`` (None after the last one or when unknown)."""
    names = [s.name for s in pipeline.stages]
    if stage is None or stage not in names:
        return None
    index = names.index(stage)
    return names[index + 1] if index + 1 < len(names) else None


def approve_target(pipeline: Pipeline, event: Event) -> str | None:
    """The stage an approved event continues with (None: straight to the output).

    Args:
        pipeline: the pipeline the event ran through.
        event: the parked event.

    Returns:
        The stage after the one that parked it, or None after the last stage.
    """
    return _next_stage(pipeline, parked_stage(pipeline, event))


def reject_target(pipeline: Pipeline, event: Event) -> str:
    """The stage a rejected event goes back to.

    The policy's rework stage, unless the event was parked before it ever got
    there (then the stage after the one that parked it, so no stage is
    skipped); without a rework stage, the stage that parked it (the first
    stage when its trace names none).

    Args:
        pipeline: the pipeline the event ran through (its review policy).
        event: the parked event.

    Returns:
        The stage name.
    """
    names = [s.name for s in pipeline.stages]
    parked = parked_stage(pipeline, event)
    rework = policy_of(pipeline).rework_stage
    if rework is None:
        return parked or names[0]
    if parked is not None and names.index(parked) < names.index(rework):
        return names[names.index(parked) + 1]
    return rework


def _review_record(outcome: DecisionKind, note: str | None) -> StepRecord:
    return StepRecord(
        step=REVIEW_STEP, started_at=time.time(), duration_s=0.0, outcome=outcome, detail=note
    )


def approved(event: Event, note: str | None = None) -> Event:
    """Return ``event`` approved: outcome ``ok``, reason cleared, a review record appended.

    Args:
        event: a parked event.
        note: the reviewer's note, kept as the record's detail.

    Returns:
        The changed copy.
    """
    return event.traced(_review_record("approved", note), outcome="ok", reason=None, error=None)


def rejected(event: Event, note: str, *, feedback_field: str = "feedback") -> Event:
    """Return ``event`` sent back with ``note`` as feedback for the rework stage.

    The payload's ``feedback_field`` becomes a failed check whose one reason is
    ``reviewer: <note>``.

    Args:
        event: a parked event.
        note: what the reviewer wants changed.
        feedback_field: the payload field the rework stage reads (the pipeline's policy).

    Returns:
        The changed copy: outcome ``ok``, error and reason cleared, a review record appended.

    Raises:
        ConfigError: the note is empty, or the payload is not an object.
    """
    if not note.strip():
        raise ConfigError("a rejection needs a note: say what to change with --note")
    feedback = {"outcome": "fail", "reasons": [f"reviewer: {note}"]}
    payload: Any = event.payload
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ConfigError(
            f"event {event.id!r}: its payload is a {type(payload).__name__}, not an object, "
            "so it cannot carry review feedback"
        )
    return event.traced(
        _review_record("rejected", note),
        payload={**payload, feedback_field: feedback},
        outcome="ok",
        reason=None,
        error=None,
    )


def decisions_path(output: str | Path) -> Path:
    """Return the decisions log that sits beside ``output`` (``<stem>.decisions.jsonl``).

    Args:
        output: the run's output file.

    Returns:
        The path of the decisions log.
    """
    out = Path(output)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.decisions.jsonl")


def decisions_topic(pipeline: Pipeline | str) -> str:
    """Return the topic of review decisions: ``{pipeline}.review.decisions``.

    Args:
        pipeline: the pipeline, or its name.

    Returns:
        The topic name.
    """
    name = pipeline if isinstance(pipeline, str) else pipeline.name
    return f"{name}.review.decisions"


def parked_only(pipeline: Pipeline, events: Iterable[Event]) -> list[Event]:
    """Return the events that one of the pipeline's stages parked.

    Anything else in the queue (an event that is not ``review``, or whose trace
    names none of the stages) was not put there by the review stage, and no
    decision applies to it.
    """
    return [e for e in events if e.outcome == "review" and parked_stage(pipeline, e) is not None]


def _latest(events: Iterable[Event]) -> dict[str, Event]:
    """The most recent parking of each event id, in the order the ids were last parked."""
    latest: dict[str, Event] = {}
    for event in events:
        current = latest.get(event.id)
        if current is None or parked_at(event) >= parked_at(current):
            latest.pop(event.id, None)
            latest[event.id] = event
    return latest


def pending(events: Iterable[Event], decisions: Sequence[Decision]) -> list[Event]:
    """Return the latest parking of each event that nobody decided, in parking order.

    Args:
        events: parked events as read from the review file or topic.
        decisions: the decisions log.

    Returns:
        The events that wait for a decision.
    """
    return [
        event
        for event in _latest(events).values()
        if not any(decision.covers(event) for decision in decisions)
    ]


def choose(
    event_id: str, events: Iterable[Event], decisions: Sequence[Decision], where: str
) -> Event:
    """Return the undecided latest parking of ``event_id``.

    Raises:
        ConfigError: no such event, or its latest parking was decided already.
    """
    event = _latest(e for e in events if e.id == event_id).get(event_id)
    if event is None:
        raise ConfigError(
            f"no event {event_id!r} is waiting for review in {where}; "
            "`streamflow review list` shows the ones that are"
        )
    for decision in decisions:
        if decision.covers(event):
            raise ConfigError(
                f"event {event_id!r} was already {decision.decision} "
                f"at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(decision.at))}"
                + (f" ({decision.note})" if decision.note else "")
                + "; a decision cannot be changed"
            )
    return event


def decide(
    pipeline: Pipeline, event: Event, decision: DecisionKind, note: str | None
) -> tuple[Event, str | None, Decision]:
    """Apply a decision to a parked event.

    Args:
        pipeline: the pipeline (its review policy says where a rejection goes).
        event: the parked event.
        decision: ``approved`` or ``rejected``.
        note: the reviewer's note (required for a rejection).

    Returns:
        The changed event, the stage it goes to (None: the output), and the decision record.

    Raises:
        ConfigError: a rejection without a note, or one whose rework stage takes a
            payload model with no field for the note.
    """
    record = Decision(
        id=event.id,
        decision=decision,
        note=note,
        round=review_round(event),
        parked_at=parked_at(event),
    )
    if decision == "approved":
        return approved(event, note), approve_target(pipeline, event), record
    if note is None:
        raise ConfigError("a rejection needs a note: say what to change with --note")
    feedback_field = policy_of(pipeline).feedback_field
    changed = rejected(event, note, feedback_field=feedback_field)
    target = reject_target(pipeline, event)
    _check_carries_feedback(pipeline, target, feedback_field)
    return changed, target, record


def _check_carries_feedback(pipeline: Pipeline, stage: str, feedback_field: str) -> None:
    """Refuse a rework stage whose payload model would drop the note when it decodes it."""
    model = next((s.payload_model for s in pipeline.stages if s.name == stage), None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return
    if feedback_field in model.model_fields or model.model_config.get("extra") == "allow":
        return
    raise ConfigError(
        f"stage '{stage}' takes {model.__name__}, which has no field '{feedback_field}' "
        f"for the reviewer's note: add `{feedback_field}: dict | None = None` to "
        f"{model.__name__}, or name a field it has with ReviewPolicy(feedback_field=...)"
    )
