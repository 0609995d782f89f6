"""The review queue of an in-process run: the files beside its output.

Parked events wait in ``<stem>.review.jsonl``; decisions are appended to
``<stem>.decisions.jsonl``. Approving writes the event to the output (or runs
the stages it has left); rejecting runs it again from the rework stage, in
this process, and appends what comes out to the result files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamflow.errors import ConfigError, EventError, StreamflowError
from streamflow.events import ErrorInfo, Event, decode_event, dumps, encode_event, loads
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
from streamflow.transports import EVENT_HEADER, IterableSource, JsonlSink, Record, side_paths

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


class _Rerun:
    """Writes what a re-run produces where the run wrote it, and keeps the last event.

    The files are the run's own sink (:class:`JsonlSink` appending), so a
    re-run's answers, parked events and dead letters are bounded and shaped
    exactly as the run's.
    """

    def __init__(self, files: JsonlSink) -> None:
        self.files = files
        self.last: Event | None = None

    def write(self, event: Event) -> None:
        self.last = event
        self.files.write(event)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        self.files.reject(record, error, ticket)

    def abandon(self, event: Event) -> None:
        info = ErrorInfo(
            type="Interrupted", message="review re-run did not finish in time", step="shutdown"
        )
        self.last = event.evolve(outcome="failed", error=info, reason=info.message)
        self.files.abandon(event)

    async def flush(self) -> None:
        await self.files.flush()


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


async def _rerun(pipeline: Pipeline, event: Event, stage: str, sink: _Rerun, drain: float) -> None:
    """Run ``event`` through the stages from ``stage`` to the end, in this process."""
    names = [s.name for s in pipeline.stages]
    report = await run_flow(
        pipeline,
        IterableSource([encode_event(event)], name="review", headers=[(EVENT_HEADER, b"review")]),
        sink,
        stages=names[names.index(stage) :],
        window=1,
        drain_timeout=drain,
    )
    if report.error is not None:
        raise StreamflowError(
            f"re-running event {event.id} from stage '{stage}' stopped: {report.error}"
        ) from report.error


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

        Args:
            event_id: the parked event's id.
            note: the reviewer's note, kept in the trace.

        Returns:
            What the decision did.

        Raises:
            ConfigError: unknown id, or already decided.
        """
        return await self._apply(event_id, "approved", note)

    async def reject(self, event_id: str, note: str) -> ReviewResult:
        """Reject ``event_id``: it runs again from the rework stage with ``note`` as feedback.

        Its result is appended to the output, review or dead-letter file.

        Args:
            event_id: the parked event's id.
            note: what to change; the rework stage reads it as feedback.

        Returns:
            What the decision did.

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
        files = JsonlSink(
            self.output_path,
            dlq=self.dlq_path,
            review=self.review_path,
            append=True,
            limits=self.pipeline.limits,
        )
        sink = _Rerun(files)
        try:
            if stage is None:
                sink.write(changed)
            else:
                await _rerun(self.pipeline, changed, stage, sink, self.drain_timeout)
        finally:
            await files.aclose()
        with self.decisions_path.open("ab") as handle:
            handle.write(dumps(decision) + b"\n")
        last = sink.last or changed
        return ReviewResult(
            decision=decision,
            sent_to=stage or "output",
            event=last,
            # No event came out: the re-run's input did not decode (a dead letter).
            outcome=last.outcome if sink.last is not None else "failed",
        )
