"""Distributed mode: one stage as a Kafka consumer-group member.

A worker reads its stage's input topic as a member of the group
``{pipeline}.{stage}``, runs the stage, and writes the next topic (or the
output, review and dead-letter topics). Offsets are committed by the source
only up to the contiguous watermark of events the sink has seen acknowledged,
so a killed worker loses nothing: its partitions are redelivered to the
group's other members with the same event ids.

The harness that runs a whole pipeline through topics in one process
(``run --broker``) lives in ``_distributed``; it reuses the stage worker here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from streamflow.errors import ConfigError, TransportBroken
from streamflow.metrics import (
    DEFAULT_HOST,
    CollectorRegistry,
    PipelineMetrics,
    open_metrics_server,
)
from streamflow.runtime._pipeline import Pipeline
from streamflow.runtime._report import RunReport
from streamflow.runtime._runner import run_flow
from streamflow.runtime._runtime import Runtime
from streamflow.transports.kafka import (
    KafkaSettings,
    KafkaSink,
    KafkaSource,
    create_topics,
    missing_topics,
)

__all__ = ["StageWorker", "check_fused", "ensure_topics", "observed", "run_worker"]

log = logging.getLogger("streamflow.runtime")

_HEALTH_INTERVAL = 0.5
# With events inside and none acknowledged for this long, the worker says on
# /healthz that it makes no progress (steps time out well before this).
_STALL_SECONDS = 120.0


class StageWorker:
    """The Kafka source and sink of one stage (or of consecutive fused stages), and its health.

    Fused stages run in this process one after the other with an in-memory
    handoff: the source reads the first stage's input in the first stage's
    group, the sink writes the last stage's output, and an offset is
    committed only when the last stage's output for it is acknowledged.
    """

    def __init__(
        self, pipeline: Pipeline, stages: str | Sequence[str], settings: KafkaSettings
    ) -> None:
        names = [stages] if isinstance(stages, str) else list(stages)
        check_fused(pipeline, names)
        first, last = names[0], names[-1]
        self.pipeline = pipeline
        self.stages = names
        self.stage = first
        self.label = "+".join(names)
        self.source = KafkaSource(
            settings, pipeline.topic_into(first), pipeline.group(first), stage=first
        )
        self.sink = KafkaSink(
            settings,
            output_topic=pipeline.topic_out_of(last),
            dlq_topic=pipeline.dlq_topic,
            review_topic=pipeline.review_topic,
            stage=last,
            limits=pipeline.limits,
        )
        self.report: RunReport | None = None
        self.stall_seconds = _STALL_SECONDS
        self._progress = (-1, time.monotonic())

    def topics(self) -> list[str]:
        """The topics this worker reads and writes."""
        pipeline = self.pipeline
        return [
            pipeline.topic_into(self.stages[0]),
            pipeline.topic_out_of(self.stages[-1]),
            pipeline.dlq_topic,
            pipeline.review_topic,
        ]

    def healthy(self) -> tuple[bool, str]:
        """Return (ok, reason) for liveness: up, the broker answers, not broken or stalled."""
        for part, (ok, reason) in (
            ("source", self.source.healthy()),
            ("sink", self.sink.healthy()),
        ):
            if not ok:
                return False, f"stage {self.label} {part}: {reason}"
        stalled = self._stalled()
        if stalled is not None:
            return False, f"stage {self.label}: {stalled}"
        return True, f"stage {self.label} ok"

    def ready(self) -> tuple[bool, str]:
        """Return (ok, reason) for readiness: alive, and its consumer joined its group."""
        ok, reason = self.healthy()
        if not ok:
            return False, reason
        joined, why = self.source.ready()
        if not joined:
            return False, f"stage {self.label} source: {why}"
        return True, f"stage {self.label}: {why}"

    def _stalled(self) -> str | None:
        """Say so when events are inside and none was acknowledged for ``stall_seconds``."""
        done = sum(self.sink.acknowledged.values()) + self.sink.written["filtered"]
        now = time.monotonic()
        last, since = self._progress
        if done != last:
            self._progress = (done, now)
            return None
        inside = self.source.statistics().partitions.values()
        in_flight = sum(count for count, _ in inside)
        if in_flight and now - since > self.stall_seconds:
            return f"no progress for {now - since:.0f}s with {in_flight} event(s) inside"
        return None

    def settle_report(self, report: RunReport) -> None:
        """Make ``report`` say what the broker acknowledged, and fail it if writes were lost.

        The runner counts an event when it hands it to the sink; only the broker's
        acknowledgement makes it written. A sink that broke (or left writes
        unacknowledged) means the worker made no progress on those events: they
        stay uncommitted and are counted as ``unwritten``, and the report carries
        the error so the worker exits non-zero.
        """
        acknowledged = self.sink.acknowledged
        handed = sum(report.outcomes.get(k, 0) for k in acknowledged)
        for outcome, count in acknowledged.items():
            if count or outcome in report.outcomes:
                report.outcomes[outcome] = count
        unwritten = handed - sum(acknowledged.values())
        if unwritten > 0:
            report.outcomes["unwritten"] = unwritten
        broken = self.sink.broken
        if report.error is None and (broken is not None or unwritten > 0):
            report.error = TransportBroken(
                f"stage {self.label} could not write {max(unwritten, 0)} event(s): "
                f"{broken or 'not acknowledged before shutdown'}",
                stage=self.stage,
            )

    def settled(self) -> bool:
        """True when the group committed everything there is to read on every partition."""
        lag = self.source.lag()
        return bool(lag) and all(value <= 0 for _, _, value in lag)

    async def run(
        self,
        metrics: PipelineMetrics,
        *,
        window: int | None,
        drain_timeout: float,
        stop: asyncio.Event,
        runtime: Runtime | None = None,
    ) -> RunReport:
        def keep(report: RunReport) -> None:
            self.report = report

        try:
            await self.sink.start()
            report = await run_flow(
                self.pipeline,
                self.source,
                self.sink,
                stages=self.stages,
                metrics=metrics,
                window=window,
                drain_timeout=drain_timeout,
                stop=stop,
                on_progress=keep,
                progress_interval=0.5,
                runtime=runtime,
            )
            self.settle_report(report)
        finally:
            # run_flow commits through source.aclose() after its final flush; these
            # cover the paths where it never got that far (both are idempotent).
            await self.sink.aclose()
            await self.source.aclose()
        self.report = report
        return report


def _wire_kafka_metrics(metrics: PipelineMetrics, workers: Sequence[StageWorker]) -> None:
    metrics.sample_kafka(
        lag=lambda: [(w.stage, t, p, v) for w in workers for t, p, v in w.source.lag()],
        paused=lambda: [(w.stage, float(w.source.paused_count())) for w in workers],
        committed=lambda: [(w.stage, t, p, v) for w in workers for t, p, v in w.source.committed()],
    )


def _health(
    workers: Sequence[StageWorker], *, readiness: bool = False
) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        reasons: list[str] = []
        fine: list[str] = []
        notes: list[str] = []
        for worker in workers:
            ok, reason = worker.ready() if readiness else worker.healthy()
            (fine if ok else reasons).append(reason)
            notes.extend(f"stage {worker.label}: {note}" for note in worker.source.resets)
        if reasons:
            return False, "; ".join(reasons)
        if readiness:
            # Which partitions each stage consumes: what an operator checks on rollout.
            return True, "ready: " + "; ".join(fine)
        # Still healthy, but an offset reset is worth seeing where health is watched.
        return True, "ok" + "".join(f"; {note}" for note in notes[-3:])

    return check


async def _keep_up_gauge(metrics: PipelineMetrics, workers: Sequence[StageWorker]) -> None:
    while True:
        for worker in workers:
            up = worker.healthy()[0]
            for stage in worker.stages:
                metrics.set_up(stage, up)
        await asyncio.sleep(_HEALTH_INTERVAL)


@contextlib.asynccontextmanager
async def observed(
    metrics: PipelineMetrics,
    workers: Sequence[StageWorker],
    metrics_port: int | None,
    on_metrics: Callable[[str], None] | None,
    metrics_host: str = DEFAULT_HOST,
) -> AsyncIterator[None]:
    """Serve /metrics, /healthz and /readyz (if a port is given); keep streamflow_up current.

    ``/healthz`` is liveness (restart the process when it fails): the pipeline
    is built, the broker answers, nothing is broken or stalled. ``/readyz`` is
    readiness: alive, and every consumer has joined its group and is consuming.
    """
    _wire_kafka_metrics(metrics, workers)
    gauge = asyncio.create_task(_keep_up_gauge(metrics, workers))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if metrics_port is not None:
                server = await stack.enter_async_context(
                    open_metrics_server(
                        metrics.registry,
                        metrics_port,
                        host=metrics_host,
                        health=_health(workers),
                        ready=_health(workers, readiness=True),
                    )
                )
                if on_metrics is not None:
                    on_metrics(server.url)
            yield
    finally:
        gauge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gauge
        for worker in workers:
            for stage in worker.stages:
                metrics.set_up(stage, False)


def check_fused(pipeline: Pipeline, names: Sequence[str]) -> None:
    """Check that ``names`` are stages of ``pipeline`` that follow each other in flow order.

    Args:
        pipeline: the pipeline.
        names: the stages one worker is to run.

    Raises:
        ConfigError: no stage given, an unknown stage, or stages that are not neighbours.
    """
    if not names:
        raise ConfigError("give at least one stage (--stage NAME or --stage A,B)")
    order = [stage.name for stage in pipeline.stages]
    for name in names:
        pipeline.stage(name)
    start = order.index(names[0])
    if order[start : start + len(names)] != list(names):
        ranked = sorted(names, key=order.index)
        first = order.index(ranked[0])
        hint = (
            f"did you mean --stage {','.join(ranked)}?"
            if order[first : first + len(ranked)] == ranked
            else "fuse neighbours only"
        )
        raise ConfigError(
            f"stages {','.join(names)} of pipeline '{pipeline.name}' are not consecutive in "
            f"flow order ({', '.join(order)}); {hint}"
        )


async def ensure_topics(
    pipeline: Pipeline,
    settings: KafkaSettings,
    needed: Sequence[str],
    *,
    create: bool,
    partitions: int = 3,
) -> None:
    """Create the pipeline's topics (``create``), or refuse to start when one is missing.

    Args:
        pipeline: the pipeline.
        settings: broker settings.
        needed: the topics the caller reads and writes.
        create: create every missing topic of the pipeline (replication 1).
        partitions: partitions of each topic ``create`` creates.

    Raises:
        ConfigError: a needed topic is missing and ``create`` is false.
        TransportError: the broker cannot be reached.
    """
    if create:
        await create_topics(settings, pipeline.topics(), partitions=partitions)
        return
    missing = await missing_topics(settings, list(needed))
    if missing:
        raise ConfigError(
            f"topic(s) {', '.join(missing)} of pipeline '{pipeline.name}' do not exist: "
            "create them with `streamflow topics create PIPELINE` "
            "(or start the worker with --create-topics)"
        )


async def run_worker(
    pipeline: Pipeline,
    stage: str | Sequence[str],
    settings: KafkaSettings,
    *,
    metrics_port: int | None = None,
    window: int | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float = 30.0,
    registry: CollectorRegistry | None = None,
    on_metrics: Callable[[str], None] | None = None,
    create_topics: bool = False,
    partitions: int = 3,
    runtime: Runtime | None = None,
    metrics_host: str = DEFAULT_HOST,
) -> RunReport:
    """Run one stage (or consecutive fused stages) of ``pipeline`` in its consumer group.

    Reads ``pipeline.topic_into(first)`` in the group ``{pipeline}.{first}``,
    runs the stage(s), and writes ``pipeline.topic_out_of(last)`` (review and
    dead letters to their topics). Fused stages hand events over in memory;
    each keeps its own metrics. When ``stop`` is set it stops reading,
    drains what is in flight, flushes the producer and commits the final
    watermark before it returns.

    Args:
        pipeline: the pipeline.
        stage: the stage this worker runs, or consecutive stages to fuse.
        settings: broker settings.
        metrics_port: serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port (0: any
            free one).
        window: most events inside this worker at once (default: the pipeline's).
        stop: set it to stop (signal handlers do); the worker runs until then.
        drain_timeout: seconds to finish in-flight work after ``stop``.
        registry: Prometheus registry to register in (default: a new one).
        on_metrics: called with the metrics server's base URL once it listens.
        create_topics: create missing topics at start instead of refusing to run.
        partitions: partitions of each topic ``create_topics`` creates.
        runtime: the runtime (limiters, collector tuning); default: one of its own.
        metrics_host: interface the metrics server binds (default 127.0.0.1).

    Returns:
        The worker's run report; ``report.error`` holds a fatal error, if one stopped it.

    Raises:
        ConfigError: no such stage, stages not consecutive, a topic is missing (and
            ``create_topics`` is false), or the metrics port cannot be bound.
        TransportError: the broker cannot be reached.
    """
    worker = StageWorker(pipeline, stage, settings)
    await ensure_topics(
        pipeline, settings, worker.topics(), create=create_topics, partitions=partitions
    )
    metrics = PipelineMetrics(registry or CollectorRegistry(), pipeline.name)
    async with observed(metrics, [worker], metrics_port, on_metrics, metrics_host):
        return await worker.run(
            metrics, window=window, drain_timeout=drain_timeout, stop=stop or asyncio.Event()
        )
