"""The flow runner: source -> decode -> stages -> sink, under one credit window."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from streamflow.errors import DecodeError, EventError, StreamflowError
from streamflow.events import Event, decode_event, decode_input
from streamflow.flow import CreditWindow, Ticket
from streamflow.metrics import PipelineMetrics
from streamflow.ops._gate import ChannelStatistics
from streamflow.runtime._items import event_from_item
from streamflow.runtime._lanes import LaneEngine
from streamflow.runtime._otel import EventSpans, spans_from_env
from streamflow.runtime._pipeline import Pipeline, StageHooks
from streamflow.runtime._report import LatencySketch, RunReport
from streamflow.runtime._runtime import Runtime
from streamflow.runtime._sinks import SinkDriver
from streamflow.transports import Record, Sink, Source, has_event_header

__all__ = ["run_flow"]

log = logging.getLogger("streamflow.runtime")


async def run_flow(
    pipeline: Pipeline,
    source: Source,
    sink: Sink,
    *,
    stages: Sequence[str] | None = None,
    metrics: PipelineMetrics | None = None,
    window: int | None = None,
    drain_timeout: float = 30.0,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[RunReport], None] | None = None,
    progress_interval: float = 0.2,
    spans: EventSpans | None = None,
    runtime: Runtime | None = None,
) -> RunReport:
    """Run ``stages`` of ``pipeline`` (default: all) from ``source`` to ``sink``.

    The source emits only against credit from a window of W events. The
    runtime gives an event's credit back when ``sink.write`` returns (or the
    awaitable it returned completes); a sink that says ``acknowledges = True``
    releases it itself on the broker's acknowledgement. The end of the input is
    not a stop: every event in flight then finishes, however long it takes.
    When ``stop`` is set (a signal), the source stops reading, in-flight events
    get ``drain_timeout`` seconds from then to finish, and whatever is still
    inside is handed to ``sink.abandon``.

    Args:
        pipeline: the pipeline.
        source: where records come from.
        sink: where events go; only ``write`` is required (see
            :class:`~streamflow.transports.Sink`).
        stages: the stages to run (a worker runs one); the first one's input is
            decoded with the pipeline's input model when it is the pipeline's first.
        metrics: Prometheus collectors to update, if any.
        window: the credit window W (default: the pipeline's).
        drain_timeout: seconds in-flight work gets to finish once ``stop`` is set
            (not at the end of the input, which waits for every event).
        stop: set it to stop reading (signal handlers do).
        on_progress: called every ``progress_interval`` seconds with the report.
        progress_interval: seconds between progress calls.
        spans: OpenTelemetry span export of finished events (default: on when
            ``STREAMFLOW_OTEL=1`` and opentelemetry-api is installed).
        runtime: what the run shares with others (limiter registry) and whether
            it may tune the garbage collector; default: a runtime of its own
            that leaves the collector alone. Metrics hooks are the run's own.

    Returns:
        The run's report; ``report.error`` holds a fatal error, if one stopped it.
    """
    names = list(stages) if stages is not None else [s.name for s in pipeline.stages]
    spans = spans if spans is not None else spans_from_env(pipeline.name)
    size = window or pipeline.window
    credits = CreditWindow(size)
    stop = stop or asyncio.Event()
    report = RunReport(pipeline.name, size, pipeline.summary_field)
    first_is_input = names[0] == pipeline.stages[0].name
    # A worker of an inner stage hands ok events on to the next stage's topic;
    # only an event that leaves the pipeline here is finished (and exported).
    last_is_output = names[-1] == pipeline.stages[-1].name
    loop = asyncio.get_running_loop()
    inside: dict[int, Event] = {}
    # A stage's durations go to its sketch, which feeds its histogram.
    sketches = {
        name: LatencySketch(metrics.stage(name) if metrics is not None else None) for name in names
    }
    report.stages = sketches
    done: asyncio.Future[None] = loop.create_future()

    # The runtime, not the sink, returns credit (unless the sink acknowledges writes itself).
    sinks = SinkDriver(sink, lambda error: fail(error))
    hooks = _stage_hooks(sketches, metrics, report.stage_cost, report.unpriced)
    chosen = [pipeline.stage(name) for name in names]

    def deliver(event: Event) -> None:
        private = event.__pydantic_private__
        ticket = private["_ticket"]  # type: ignore[index]
        inside.pop(id(ticket), None)
        if ticket is not None:
            report.end_to_end.add(time.perf_counter() - ticket.read_at)
        if spans is not None and (last_is_output or event.outcome != "ok"):
            spans.export(event)
        # Counted once the sink took it: a write that raises (a full sink, a full
        # disk) stops the run, and the event must not show as written.
        sinks.write(event, ticket)
        outcome = "dead_lettered" if event.outcome == "failed" else event.outcome
        report.count(outcome, event)
        if event.outcome == "failed" and metrics is not None:
            metrics.stage(private["_failed_in"] or names[-1]).dead_lettered += 1  # type: ignore[index]

    def fail(error: Exception) -> None:
        log.error("pipeline %s stopped on a fatal error: %r", pipeline.name, error)
        report.error = error
        stop.set()
        if not done.done():
            done.set_result(None)

    def completed() -> None:
        if not done.done():
            done.set_result(None)

    # Every stage runs per event; a stage holding a user's own reactivex
    # operator runs on the observable path inside the same engine.
    runner = LaneEngine(chosen, size, hooks, deliver, fail, completed)
    push = runner.push
    if metrics is not None:
        metrics.sample_backpressure(names[0], lambda: credits.waited_seconds)
        for name in names:
            stats = functools.partial(runner.statistics, name)
            metrics.sample_stage(
                name,
                in_flight=functools.partial(_stat, stats, "inside"),
                buffered=functools.partial(_stat, stats, "buffered"),
            )

    input_model, key_field, id_field = pipeline.input_model, pipeline.key_field, pipeline.id_field
    # An event streamflow wrote (the stage before, a review decision, a replay) is
    # decoded to the model its first stage takes, so a step sees the same type as
    # in one process (one validation per hop).
    hop_model = chosen[0].payload_model
    if not (isinstance(hop_model, type) and issubclass(hop_model, BaseModel)):
        hop_model = None
    limits = pipeline.limits

    def emit(record: Record, ticket: Ticket) -> None:
        report.read += 1
        try:
            if record.item is not None:
                event = event_from_item(
                    record.item,
                    input_model,
                    origin=record.origin,
                    key_field=key_field,
                    id_field=id_field,
                )
            elif record.headers and has_event_header(record.headers):
                # An event streamflow wrote (a review decision, a replay, the
                # previous stage). Entering at the first stage it runs every stage
                # like a new input, whatever its envelope claims.
                event = decode_event(record.value, hop_model, limits=limits, origin=record.origin)
                if first_is_input:
                    event.outcome, event.error, event.reason = "ok", None, None
            elif first_is_input:
                # Input is always input: a record shaped like an event is a payload.
                key = record.key.decode("utf-8", "replace") if record.key is not None else None
                event = decode_input(
                    record.value,
                    input_model,
                    origin=record.origin,
                    key_field=key_field,
                    id_field=id_field,
                    key=key,
                    limits=limits,
                )
            else:
                raise DecodeError(
                    f"record {record.origin} is not a streamflow event (no event header): "
                    "only the pipeline's stages write this topic"
                )
        except EventError as exc:
            report.count("dead_lettered")
            if metrics is not None:
                metrics.stage("decode").dead_lettered += 1
            sinks.reject(record, exc, ticket)
            return
        private = event.__pydantic_private__
        private["_ticket"] = ticket  # type: ignore[index]
        private["_origin"] = record  # type: ignore[index]
        inside[id(ticket)] = event
        push(event)

    progress_task = None
    if on_progress is not None:
        progress_task = loop.create_task(_progress(report, credits, on_progress, progress_interval))
    runtime = runtime if runtime is not None else Runtime()
    # A source waiting on a full window behind slow steps hears a stop at once.
    stop_watch = loop.create_task(stop.wait())
    stop_watch.add_done_callback(lambda _: credits.wake())
    # Steps started from here (and tasks they start) report to this run's hooks.
    async with runtime.running(metrics):
        try:
            try:
                await source.run(emit, credits, stop)
            except StreamflowError as exc:
                fail(exc)
            if report.error is None:
                runner.finish()
                if not await _drained(done, stop, drain_timeout):
                    log.warning(
                        "%d events still in flight %.1fs after the stop; abandoning them",
                        len(inside),
                        drain_timeout,
                    )
            await runner.dispose()
            for event in list(inside.values()):
                report.count("interrupted", event)
                sinks.abandon(runner.abandoned(event))
            inside.clear()
            await sinks.flush()
            _count_unwritable(report, sink)
            # Only now is everything read either written or abandoned, so a source
            # that tracks positions (Kafka) can commit its final watermark.
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
        finally:
            report.finished = time.perf_counter()
            report.peak_in_flight = credits.peak_in_use
            for sketch in sketches.values():
                sketch.flush()
            report.stopped_early = stop.is_set()
            stop_watch.cancel()
            if progress_task is not None:
                progress_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress_task
                on_progress(report) if on_progress is not None else None
    return report


def _count_unwritable(report: RunReport, sink: Sink) -> None:
    """Move events the sink could not write (and dead-lettered instead) to ``dead_lettered``."""
    moved = getattr(sink, "unwritable", None)
    if not moved:
        return
    for outcome, count in moved.items():
        report.outcomes[outcome] -= count
        report.outcomes["dead_lettered"] += count


async def _drained(done: asyncio.Future[None], stop: asyncio.Event, timeout: float) -> bool:
    """Wait for every event in flight; only a stop starts the ``timeout``. True if all finished."""
    if not stop.is_set():
        # The end of the input: no clock runs, however slow the steps are.
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((done, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if done.done():
            return True
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return False
    return True


def _stat(stats: Callable[[], ChannelStatistics | None], field: str) -> float:
    return float(getattr(stats(), field, 0))


def _stage_hooks(
    sketches: dict[str, LatencySketch],
    metrics: PipelineMetrics | None,
    stage_cost: dict[str, float],
    unpriced: set[str],
) -> StageHooks:
    stage_metrics = {name: metrics.stage(name) for name in sketches} if metrics else {}

    def meter(stage: str) -> Callable[[Event, float, int], None]:
        add = sketches[stage].add  # the sketch feeds the stage's duration histogram
        m = stage_metrics.get(stage)

        def measured(event: Event, duration: float, first: int) -> None:
            # Every event, every stage: no allocation unless a step used a model or retried.
            add(duration)
            fields = event.__dict__
            trace = fields["trace"]
            outcome = fields["outcome"]
            if outcome == "ok" and len(trace) == first + 1:
                # The common case: one step, one attempt, no model.
                record = trace[first]
                if record.attempt == 1 and record.model is None:
                    if m is not None:
                        m.ok += 1
                    return
            failed = outcome == "failed"
            if failed:
                event.__pydantic_private__["_failed_in"] = stage  # type: ignore[index]
            retried = False
            for record in trace[first:]:
                if record.attempt > 1:
                    retried = True
                if record.model is not None:
                    if record.cost_usd is None:
                        unpriced.add(record.model)  # unknown, not free
                    else:
                        stage_cost[stage] = stage_cost.get(stage, 0.0) + record.cost_usd
                    if metrics is not None:
                        metrics.model_usage(stage, record)
            if m is None:
                return
            if failed:
                m.failed += 1
            elif outcome == "filtered":
                m.filtered += 1
            elif outcome == "review":
                m.review += 1
            elif retried:
                m.retried += 1
            else:
                m.ok += 1

        return measured

    return StageHooks(meter=meter)


async def _progress(
    report: RunReport,
    credits: CreditWindow,
    on_progress: Callable[[RunReport], None],
    interval: float,
) -> None:
    while True:
        await asyncio.sleep(interval)
        report.peak_in_flight = credits.peak_in_use
        on_progress(report)
