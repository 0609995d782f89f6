"""The review queue of an in-process run: the files beside its output.

Parked events wait in ``<stem>.review.jsonl``; decisions are appended to
``<stem>.decisions.jsonl``. Approving writes the event to the output (or runs
the stages it has left); rejecting runs it again from the rework stage, in
this process, and appends what comes out to the result files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamflow.errors import ConfigError, EventError, StreamflowError
from streamflow.events import DeadLetter, ErrorInfo, Event, decode_event, dumps, encode_event, loads
from streamflow.flow import Ticket
from streamflow.runtime._pipeline import Pipeline
from streamflow.runtime._runner import run_flow
from streamflow.runtime.review._decisions import (
    Decision,
    DecisionKind,
    choose,
    decide,
    decisions_path,
    parked_only,
    pending,
)
from streamflow.transports import EVENT_HEADER, IterableSource, Record, side_paths

__all__ = ["FileReviewQueue", "ReviewResult"]


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
        return pending(parked_only(self.pipeline, _read_events(self.review_path)), self.decisions())

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
        event = choose(
            event_id,
            parked_only(self.pipeline, _read_events(self.review_path)),
            self.decisions(),
            str(self.review_path),
        )
        changed, stage, decision = decide(self.pipeline, event, kind, note)
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
                letter = DeadLetter.of(event)
                lines.setdefault(self.dlq_path, []).append(dumps(letter))
        for letter in letters:
            lines.setdefault(self.dlq_path, []).append(dumps(letter))
        for path, values in lines.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as handle:
                handle.write(b"".join(value + b"\n" for value in values))
