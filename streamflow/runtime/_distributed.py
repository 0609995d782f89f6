"""Run a whole pipeline through Kafka topics in one process (``run --broker``).

One stage worker per stage runs here, the input file is produced to
``{pipeline}.in``, and a reader collects ``.out``, ``.review`` and ``.dlq``
into files, once per event id. It is a harness for trying the distributed
mode on one machine; production deployments run ``streamflow worker`` per
stage instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from streamflow.errors import ConfigError, EventError
from streamflow.events import DeadLetter, Event, decode_event, loads
from streamflow.metrics import DEFAULT_HOST, CollectorRegistry, PipelineMetrics
from streamflow.runtime._pipeline import Pipeline
from streamflow.runtime._produce import produce_input
from streamflow.runtime._report import LatencySketch, RunReport
from streamflow.runtime._worker import StageWorker, observed
from streamflow.transports import ResultFile, side_paths
from streamflow.transports.kafka import KafkaSettings, consume_events, create_topics

__all__ = ["run_distributed"]

# Once the input is all produced and every stage has committed everything it
# read, this long without a new result means the rest was filtered or merged.
_QUIET_SECONDS = 2.0


class _ResultFiles:
    """The output, review and dead-letter files a distributed run writes."""

    def __init__(
        self, output: str, dlq: str | None, review: str | None, *, append: bool = False
    ) -> None:
        default_dlq, default_review = side_paths(output)
        self.output_path = None if output == "-" else Path(output)
        self.dlq_path = Path(dlq) if dlq else default_dlq
        self.review_path = Path(review) if review else default_review
        # Written aside and renamed at the end (or appended to), like `run` in one process.
        self._files = {
            outcome: ResultFile(path, append=append, atomic=True)
            for outcome, path in (
                ("ok", self.output_path),
                ("review", self.review_path),
                ("dead_lettered", self.dlq_path),
            )
            if path is not None
        }
        self._handles: dict[str, BinaryIO] = {k: f.handle for k, f in self._files.items()}
        self._handles.setdefault("ok", sys.stdout.buffer)

    def write(self, outcome: str, value: bytes) -> None:
        self._handles[outcome].write(value + b"\n")

    def close(self) -> None:
        self._handles["ok"].flush()
        for file in self._files.values():
            file.close()


class _Results:
    """Counts what reached out/review/dlq once per event id, and where time went."""

    def __init__(self, pipeline: Pipeline, report: RunReport, files: _ResultFiles) -> None:
        self.pipeline = pipeline
        self.report = report
        self.files = files
        self.seen: set[str] = set()
        self.duplicates = 0
        self.last_at = time.monotonic()
        self._step_stage = {
            op.name: stage.name for stage in pipeline.stages for op in stage.op.walk()
        }
        self._outcome = {
            pipeline.output_topic: "ok",
            pipeline.review_topic: "review",
            pipeline.dlq_topic: "dead_lettered",
        }
        for stage in pipeline.stages:
            report.stages.setdefault(stage.name, LatencySketch())

    def add(self, topic: str, value: bytes, not_before: float) -> None:
        outcome = self._outcome.get(topic)
        if outcome is None:
            return
        identity, event, at = self._identify(outcome, value)
        if at is not None and at < not_before:
            return  # left over from an earlier run
        self.last_at = time.monotonic()
        if identity in self.seen:
            self.duplicates += 1
            return
        self.seen.add(identity)
        self.files.write(outcome, value)
        self.report.count(outcome, event)
        if event is not None:
            self._trace(event)

    def _identify(self, outcome: str, value: bytes) -> tuple[str, Event | None, float | None]:
        if outcome != "dead_lettered":
            try:
                event = decode_event(value)
            except EventError:
                return f"raw:{hash(value)}", None, None
            return event.id, event, event.created_at
        try:
            letter = DeadLetter.model_validate(loads(value))
        except (EventError, ValueError):
            return f"raw:{hash(value)}", None, None
        identity = letter.id or letter.origin or f"raw:{hash(value)}"
        return identity, letter.event, letter.dead_at

    def _trace(self, event: Event) -> None:
        # A stage's own steps name it; the records a step writes while it runs (the
        # rounds of a regenerate loop, say) come just before the step's own record.
        per_stage: dict[str, float] = {}
        cost = self.report.stage_cost
        stage: str | None = None
        for record in reversed(event.trace):
            own = self._step_stage.get(record.step)
            if own is not None:
                stage = own
                per_stage[stage] = per_stage.get(stage, 0.0) + record.duration_s
            if stage is not None and record.cost_usd:
                cost[stage] = cost.get(stage, 0.0) + record.cost_usd
            elif record.cost_usd is None and record.model is not None:
                self.report.unpriced.add(record.model)  # unknown, not free
        for name, seconds in per_stage.items():
            self.report.stages[name].add(seconds)
        self.report.end_to_end.add(max(time.time() - event.created_at, 0.0))


def _file_lines(path: Path, produced: list[int]) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            stripped = line.strip()
            if stripped:
                produced[0] += 1
                yield stripped


async def _stdin_lines(produced: list[int]) -> AsyncIterator[bytes]:
    while True:
        line = await asyncio.to_thread(sys.stdin.buffer.readline)
        if not line:
            return
        stripped = line.strip()
        if stripped:
            produced[0] += 1
            yield stripped


async def run_distributed(
    pipeline: Pipeline,
    settings: KafkaSettings,
    *,
    input_path: str,
    output_path: str,
    dlq_path: str | None = None,
    review_path: str | None = None,
    append: bool = False,
    metrics_port: int | None = None,
    window: int | None = None,
    drain_timeout: float = 30.0,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[RunReport], None] | None = None,
    on_metrics: Callable[[str], None] | None = None,
    progress_interval: float = 0.2,
    registry: CollectorRegistry | None = None,
    metrics_host: str = DEFAULT_HOST,
) -> RunReport:
    """Run every stage of ``pipeline`` as a worker in this process, with Kafka between them.

    Produces the input (a JSONL file, or ``-`` for stdin) to ``{pipeline}.in``,
    runs one worker per stage, and reads ``.out``, ``.review`` and ``.dlq`` into
    the output file and the review and dead-letter files beside it. Each event
    id is written and counted once, however often it was delivered. The run
    ends when every input record is accounted for (or, when stages filter
    events, when every stage has committed all it read and results stop
    coming), or when ``stop`` is set.

    Args:
        pipeline: the pipeline.
        settings: broker settings.
        input_path: JSONL file, or ``-`` for stdin.
        output_path: JSONL file for answers, or ``-`` for stdout.
        dlq_path: dead-letter file (default: beside the output).
        review_path: review file (default: beside the output).
        append: add to the result files instead of replacing them.
        metrics_port: serve ``/metrics`` and ``/healthz`` here.
        window: credit window of each stage's worker (default: the pipeline's).
        drain_timeout: seconds each worker gets to finish in-flight work when stopping.
        stop: set it to stop early (signal handlers do).
        on_progress: called every ``progress_interval`` seconds with the report.
        on_metrics: called with the metrics server's base URL once it listens.
        progress_interval: seconds between progress calls.
        registry: Prometheus registry to register in (default: a new one).
        metrics_host: interface the metrics server binds (default 127.0.0.1).

    Returns:
        The run's report: outcomes of distinct events, stage latencies from their traces.

    Raises:
        ConfigError: the input file is missing or the metrics port cannot be bound.
        TransportError: the broker cannot be reached.
    """
    source_path = None if input_path == "-" else Path(input_path)
    if source_path is not None and not source_path.is_file():
        raise ConfigError(f"input file {input_path!r} does not exist; check --input")
    stop = stop or asyncio.Event()
    size = window or pipeline.window
    report = RunReport(pipeline.name, size, pipeline.summary_field)
    await create_topics(settings, pipeline.topics())
    workers = [StageWorker(pipeline, s.name, settings) for s in pipeline.stages]
    metrics = PipelineMetrics(registry or CollectorRegistry(), pipeline.name)
    files = _ResultFiles(output_path, dlq_path, review_path, append=append)
    results = _Results(pipeline, report, files)
    workers_stop = asyncio.Event()
    # Results older than this belong to an earlier run over the same topics.
    not_before = time.time() - 1.0
    produced = [0]
    worker_tasks: list[asyncio.Task[RunReport]] = []
    tasks: list[asyncio.Task[Any]] = []

    async def collect() -> None:
        topics = [pipeline.output_topic, pipeline.review_topic, pipeline.dlq_topic]
        async for topic, value in consume_events(
            settings, topics, group=None, count=None, idle_timeout=None
        ):
            results.add(topic, value, not_before)

    async def produce() -> int:
        lines: Iterable[bytes] | AsyncIterator[bytes] = (
            _file_lines(source_path, produced)
            if source_path is not None
            else _stdin_lines(produced)
        )
        return await produce_input(
            settings, pipeline.input_topic, lines, key_field=pipeline.key_field
        )

    def filtered() -> int:
        return sum(w.report.outcomes.get("filtered", 0) for w in workers if w.report)

    try:
        async with observed(metrics, workers, metrics_port, on_metrics, metrics_host):
            worker_tasks = [
                asyncio.create_task(
                    w.run(metrics, window=window, drain_timeout=drain_timeout, stop=workers_stop)
                )
                for w in workers
            ]
            collector = asyncio.create_task(collect())
            producer = asyncio.create_task(produce())
            tasks = [*worker_tasks, collector, producer]
            stopped = asyncio.create_task(stop.wait())
            while not stop.is_set():
                report.read = produced[0]
                report.outcomes["filtered"] = filtered()
                if on_progress is not None:
                    on_progress(report)
                for task in tasks:
                    error = task.exception() if task.done() else None
                    if error is not None:
                        raise error
                if producer.done() and _finished(report, results, workers):
                    break
                await asyncio.wait([stopped], timeout=progress_interval)
            stopped.cancel()
            workers_stop.set()
            for task in worker_tasks:
                stage_report = await task
                if stage_report.error is not None:
                    report.error = stage_report.error
            report.outcomes["filtered"] = filtered()
    finally:
        workers_stop.set()
        # Workers stopped on purpose drain and commit; only a stuck one is cancelled.
        if worker_tasks:
            await asyncio.wait(worker_tasks, timeout=drain_timeout + 10)
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        files.close()
        report.finished = time.perf_counter()
        report.stopped_early = stop.is_set()
        report.peak_in_flight = max(
            (w.report.peak_in_flight for w in workers if w.report), default=0
        )
        if on_progress is not None:
            on_progress(report)
    if not report.outcomes["filtered"]:
        del report.outcomes["filtered"]
    return report


def _finished(report: RunReport, results: _Results, workers: Sequence[StageWorker]) -> bool:
    if report.done >= report.read:
        return True
    # Some inputs produced no result (filtered, or repeated ids in the input):
    # finished once the first stage has read everything produced, every stage
    # committed all it read, and results went quiet. Without the first check a
    # slow start (a group still joining on a loaded machine) looks settled: a
    # consumer that has not fetched since the input was produced sees no lag.
    first = workers[0].report if workers else None
    if first is None or first.read < report.read:
        return False
    quiet = time.monotonic() - results.last_at > _QUIET_SECONDS
    return quiet and all(w.settled() for w in workers)
