"""Human review: list the events parked for a person, approve them, or send them back.

An event parked with outcome ``review`` waits in the review file
(``<stem>.review.jsonl``) or topic (``{pipeline}.review``). A person decides:

- **approve**: the event goes on as it is (outcome ``ok``). Parked by the last
  stage, it goes straight to the output; parked earlier (a classifier unsure of
  a label), it continues with the stage after the one that parked it.
- **reject**: the note becomes feedback (payload ``check`` =
  ``{"outcome": "fail", "reasons": ["reviewer: <note>"]}``) and the event goes
  back to the pipeline's rework stage, which drafts again with it. An event
  parked before it ever reached the rework stage continues after the stage
  that parked it instead, so no stage is skipped.

Each decision appends a ``review`` record to the event's trace and one line
to the decisions log (``<stem>.decisions.jsonl`` or ``{pipeline}.review.decisions``).
A decision belongs to one *round*: the number of review records the event
carried when it was decided. An event that comes back to review after a
rework is a new round, so it can be decided again; the same round cannot.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from streamflow.errors import ConfigError, EventError, StreamflowError
from streamflow.events import (
    DeadLetter,
    ErrorInfo,
    Event,
    StepRecord,
    decode_event,
    dumps,
    encode_event,
    loads,
)
from streamflow.flow import Ticket
from streamflow.runtime._pipeline import Pipeline
from streamflow.runtime._runner import run_flow
from streamflow.transports import EVENT_HEADER, IterableSource, Record, side_paths

if TYPE_CHECKING:
    from streamflow.transports.kafka import KafkaSettings

__all__ = [
    "REVIEW_STEP",
    "Decision",
    "FileReviewQueue",
    "KafkaReviewQueue",
    "ReviewResult",
    "approve_target",
    "approved",
    "decisions_path",
    "decisions_topic",
    "parked_stage",
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
    """

    id: str
    decision: DecisionKind
    note: str | None = None
    at: float = Field(default_factory=time.time)
    round: int = 0


@dataclass(frozen=True)
class ReviewResult:
    """What a decision did.

    Attributes:
        decision: the decision recorded.
        sent_to: where the event went: a stage name, or ``output``.
        event: the event as it was sent on (after the re-run, in one process).
        outcome: the event's outcome after the re-run (``ok``, ``review``, ``failed``,
            ``filtered``), or None when it was handed to workers through Kafka.
    """

    decision: Decision
    sent_to: str
    event: Event
    outcome: str | None


# -- pure decisions -------------------------------------------------------------------


def review_round(event: Event) -> int:
    """Return how many review decisions ``event`` carries (its current review round)."""
    return sum(1 for record in event.trace if record.step == REVIEW_STEP)


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
    """The stage an approved event continues with (None: straight to the output)."""
    return _next_stage(pipeline, parked_stage(pipeline, event))


def reject_target(pipeline: Pipeline, event: Event) -> str:
    """The stage a rejected event goes back to.

    The rework stage, unless the event was parked before it ever got there;
    then the stage after the one that parked it, so no stage is skipped.
    """
    names = [s.name for s in pipeline.stages]
    rework = pipeline.rework_stage
    parked = parked_stage(pipeline, event)
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


def rejected(event: Event, note: str) -> Event:
    """Return ``event`` sent back with ``note`` as feedback for the rework stage.

    The payload's ``check`` field becomes a failed check whose one reason is
    ``reviewer: <note>``, which a generate step reads as feedback.

    Args:
        event: a parked event.
        note: what the reviewer wants changed.

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
            f"event {event.id}: its payload is a {type(payload).__name__}, not an object, "
            "so it cannot carry review feedback"
        )
    return event.traced(
        _review_record("rejected", note),
        payload={**payload, "check": feedback},
        outcome="ok",
        reason=None,
        error=None,
    )


def decisions_path(output: str | Path) -> Path:
    """Return the decisions log that sits beside ``output`` (``<stem>.decisions.jsonl``)."""
    out = Path(output)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.decisions.jsonl")


def decisions_topic(pipeline: Pipeline | str) -> str:
    """Return the topic of review decisions: ``{pipeline}.review.decisions``."""
    name = pipeline if isinstance(pipeline, str) else pipeline.name
    return f"{name}.review.decisions"


def _parked(pipeline: Pipeline, events: Iterable[Event]) -> list[Event]:
    """Only events that one of the pipeline's stages parked: anything else in the queue
    (an event that is not ``review``, or whose trace names none of the stages) was
    not put there by the review stage, and no decision applies to it."""
    return [e for e in events if e.outcome == "review" and parked_stage(pipeline, e) is not None]


def _pending(events: Iterable[Event], decisions: Iterable[Decision]) -> list[Event]:
    """The latest round of each parked event that nobody decided, in arrival order."""
    decided = {(d.id, d.round) for d in decisions}
    latest: dict[str, Event] = {}
    for event in events:
        current = latest.get(event.id)
        if current is None or review_round(event) >= review_round(current):
            latest.pop(event.id, None)
            latest[event.id] = event
    return [e for e in latest.values() if (e.id, review_round(e)) not in decided]


def _choose(
    event_id: str, events: Sequence[Event], decisions: Sequence[Decision], where: str
) -> Event:
    """Return the undecided parked event ``event_id``.

    Raises:
        ConfigError: no such event, or its current round was decided already.
    """
    rounds = [e for e in events if e.id == event_id]
    if not rounds:
        raise ConfigError(
            f"no event {event_id!r} is waiting for review in {where}; "
            "`streamflow review list` shows the ones that are"
        )
    event = max(rounds, key=review_round)
    for decision in decisions:
        if decision.id == event_id and decision.round == review_round(event):
            raise ConfigError(
                f"event {event_id!r} was already {decision.decision} "
                f"at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(decision.at))}"
                + (f" ({decision.note})" if decision.note else "")
                + "; a decision cannot be changed"
            )
    return event


def _decide(
    pipeline: Pipeline, event: Event, decision: DecisionKind, note: str | None
) -> tuple[Event, str | None, Decision]:
    """The changed event, the stage it goes to (None: output), and the decision record."""
    record = Decision(id=event.id, decision=decision, note=note, round=review_round(event))
    if decision == "approved":
        return approved(event, note), approve_target(pipeline, event), record
    if note is None:
        raise ConfigError("a rejection needs a note: say what to change with --note")
    return rejected(event, note), reject_target(pipeline, event), record


# -- files (one process) ---------------------------------------------------------------


class _CollectingSink:
    """Keeps what a re-run produces, so it can be appended to the result files."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.letters: list[DeadLetter] = []

    def write(self, event: Event) -> None:
        self.events.append(event)
        _release(event._ticket)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        self.letters.append(
            DeadLetter(
                id=error.event_id,
                stage="decode",
                error=ErrorInfo(type=type(error).__name__, message=str(error), step="decode"),
                original=record.value.decode("utf-8", errors="replace"),
                origin=record.origin,
            )
        )
        ticket.release()

    def abandon(self, event: Event) -> None:
        info = ErrorInfo(
            type="Interrupted", message="review re-run did not finish in time", step="shutdown"
        )
        self.events.append(event.evolve(outcome="failed", error=info, reason=info.message))
        _release(event._ticket)

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _release(ticket: Ticket | None) -> None:
    if ticket is not None:
        ticket.release()


def _read_events(path: Path) -> Iterator[Event]:
    if not path.is_file():
        return
    with path.open("rb") as handle:
        for line in handle:
            stripped = line.strip()
            if not stripped:
                continue
            try:
                yield decode_event(stripped)
            except EventError:
                continue


def _read_decisions(path: Path) -> list[Decision]:
    if not path.is_file():
        return []
    found = []
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    found.append(Decision.model_validate(loads(line)))
                except (EventError, ValueError):
                    continue
    return found


async def _rerun(
    pipeline: Pipeline, event: Event, stage: str, drain_timeout: float
) -> _CollectingSink:
    """Run ``event`` through the stages from ``stage`` to the end, in this process."""
    names = [s.name for s in pipeline.stages]
    sink = _CollectingSink()
    report = await run_flow(
        pipeline,
        IterableSource([encode_event(event)], name="review", headers=[(EVENT_HEADER, b"review")]),
        sink,
        stages=names[names.index(stage) :],
        window=1,
        drain_timeout=drain_timeout,
    )
    if report.error is not None:
        raise StreamflowError(
            f"re-running event {event.id} from stage '{stage}' stopped: {report.error}"
        ) from report.error
    return sink


class FileReviewQueue:
    """The review queue of an in-process run: the files beside its output.

    Args:
        pipeline: the pipeline that wrote the files.
        output: the run's output file; review, dead-letter and decision files sit beside it.
        drain_timeout: seconds a re-run may take.

    Raises:
        ConfigError: ``output`` is ``-`` (stdout has no files beside it).
    """

    def __init__(
        self, pipeline: Pipeline, output: str | Path, *, drain_timeout: float = 30.0
    ) -> None:
        if str(output) == "-":
            raise ConfigError("review needs the output file of the run, not '-'; pass --output")
        self.pipeline = pipeline
        self.output_path = Path(output)
        self.dlq_path, self.review_path = side_paths(self.output_path)
        self.decisions_path = decisions_path(self.output_path)
        self.drain_timeout = drain_timeout

    def decisions(self) -> list[Decision]:
        """Return every decision recorded so far, oldest first."""
        return _read_decisions(self.decisions_path)

    def pending(self) -> list[Event]:
        """Return the parked events nobody has decided yet, in the order they were parked."""
        return _pending(_parked(self.pipeline, _read_events(self.review_path)), self.decisions())

    async def approve(self, event_id: str, note: str | None = None) -> ReviewResult:
        """Approve ``event_id``: it goes on to the output (or the stages it has left).

        Raises:
            ConfigError: unknown id, or already decided.
        """
        return await self._apply(event_id, "approved", note)

    async def reject(self, event_id: str, note: str) -> ReviewResult:
        """Reject ``event_id``: it runs again from the rework stage with ``note`` as feedback.

        Its result is appended to the output, review or dead-letter file.

        Raises:
            ConfigError: unknown id, already decided, or an empty note.
        """
        return await self._apply(event_id, "rejected", note)

    async def _apply(self, event_id: str, kind: DecisionKind, note: str | None) -> ReviewResult:
        event = _choose(
            event_id,
            _parked(self.pipeline, _read_events(self.review_path)),
            self.decisions(),
            str(self.review_path),
        )
        changed, stage, decision = _decide(self.pipeline, event, kind, note)
        if stage is None:
            finished, letters = [changed], []
        else:
            sink = await _rerun(self.pipeline, changed, stage, self.drain_timeout)
            finished, letters = sink.events, sink.letters
        self._append(finished, letters)
        with self.decisions_path.open("ab") as handle:
            handle.write(dumps(decision) + b"\n")
        last = finished[-1] if finished else changed
        return ReviewResult(
            decision=decision,
            sent_to=stage or "output",
            event=last,
            outcome=last.outcome if finished else "failed",
        )

    def _append(self, events: Sequence[Event], letters: Sequence[DeadLetter]) -> None:
        lines: dict[Path, list[bytes]] = {}
        for event in events:
            if event.outcome == "ok":
                lines.setdefault(self.output_path, []).append(encode_event(event))
            elif event.outcome == "review":
                lines.setdefault(self.review_path, []).append(encode_event(event))
            elif event.outcome == "failed":
                error = event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
                letter = DeadLetter(
                    id=event.id,
                    stage=event._failed_in or error.step,
                    error=error,
                    attempts=event.attempts,
                    event=event,
                )
                lines.setdefault(self.dlq_path, []).append(dumps(letter))
        for letter in letters:
            lines.setdefault(self.dlq_path, []).append(dumps(letter))
        for path, values in lines.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as handle:
                handle.write(b"".join(value + b"\n" for value in values))


# -- Kafka -----------------------------------------------------------------------------


class KafkaReviewQueue:
    """The review queue of a distributed pipeline: ``{pipeline}.review`` and its decisions.

    Listing reads both topics from the beginning without a consumer group, so
    it commits nothing and any number of people can look. Approving produces
    the event to the output topic (or the topic of the stage it continues
    with); rejecting produces it to the rework stage's input topic, where the
    running workers pick it up. The decisions topic is created on first use.

    Args:
        pipeline: the pipeline.
        settings: broker settings.
        idle_timeout: seconds without a record after which a read of the topics ends.
    """

    def __init__(
        self, pipeline: Pipeline, settings: KafkaSettings, *, idle_timeout: float = 1.0
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.idle_timeout = idle_timeout
        self.decisions_topic = decisions_topic(pipeline)

    async def _read(self) -> tuple[list[Event], list[Decision]]:
        from streamflow.transports.kafka import consume_events, create_topics, describe_topics

        topics = [self.pipeline.review_topic, self.decisions_topic]
        await create_topics(self.settings, topics)
        described = await describe_topics(self.settings, topics)
        total = sum(sum(info.get("end_offsets", {}).values()) for info in described.values())
        events: list[Event] = []
        decisions: list[Decision] = []
        if total == 0:
            return events, decisions
        async for topic, value in consume_events(
            self.settings, topics, group=None, count=total, idle_timeout=self.idle_timeout
        ):
            try:
                if topic == self.decisions_topic:
                    decisions.append(Decision.model_validate(loads(value)))
                else:
                    events.append(decode_event(value))
            except (EventError, ValueError):
                continue
        # Partitions interleave; the decision order that matters is by time.
        events = _parked(self.pipeline, events)
        events.sort(key=lambda e: e.trace[-1].started_at if e.trace else e.created_at)
        return events, decisions

    async def pending(self) -> list[Event]:
        """Return the parked events nobody has decided yet.

        Raises:
            TransportError: the broker could not be reached.
        """
        events, decisions = await self._read()
        return _pending(events, decisions)

    async def approve(self, event_id: str, note: str | None = None) -> ReviewResult:
        """Approve ``event_id``: produce it to the output topic (or its next stage's topic).

        Raises:
            ConfigError: unknown id, or already decided.
            TransportError: the broker could not be reached or refused the write.
        """
        return await self._apply(event_id, "approved", note)

    async def reject(self, event_id: str, note: str) -> ReviewResult:
        """Reject ``event_id``: produce it with ``note`` as feedback to the rework stage's topic.

        Raises:
            ConfigError: unknown id, already decided, or an empty note.
            TransportError: the broker could not be reached or refused the write.
        """
        return await self._apply(event_id, "rejected", note)

    async def _apply(self, event_id: str, kind: DecisionKind, note: str | None) -> ReviewResult:
        from streamflow.transports.kafka import KafkaSink, produce_lines

        events, decisions = await self._read()
        event = _choose(event_id, events, decisions, self.pipeline.review_topic)
        changed, stage, decision = _decide(self.pipeline, event, kind, note)
        topic = self.pipeline.output_topic if stage is None else self.pipeline.topic_into(stage)
        sink = KafkaSink(
            self.settings,
            output_topic=topic,
            dlq_topic=self.pipeline.dlq_topic,
            review_topic=self.pipeline.review_topic,
            stage=REVIEW_STEP,
        )
        await sink.start()
        try:
            sink.write(changed)
            await sink.flush()
            ok, reason = sink.healthy()
            if not ok:
                raise StreamflowError(f"sending event {event_id} to {topic} failed: {reason}")
        finally:
            await sink.aclose()
        # Recorded after the event is acknowledged: a lost decision at worst
        # repeats a send of the same id, which consumers drop as a duplicate.
        await produce_lines(self.settings, self.decisions_topic, [dumps(decision)], key_field="id")
        return ReviewResult(
            decision=decision, sent_to=stage or "output", event=changed, outcome=None
        )
