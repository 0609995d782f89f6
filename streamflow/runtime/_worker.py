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
from collections.abc import AsyncIterator, Callable, Sequence

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
from streamflow.transports.kafka import KafkaSettings, KafkaSink, KafkaSource, create_topics

__all__ = ["StageWorker", "observed", "run_worker"]

log = logging.getLogger("streamflow.runtime")

_HEALTH_INTERVAL = 0.5


class StageWorker:
    """The Kafka source and sink of one stage, and its health (shared with the harness)."""

    def __init__(self, pipeline: Pipeline, stage: str, settings: KafkaSettings) -> None:
        pipeline.stage(stage)
        self.pipeline = pipeline
        self.stage = stage
        self.source = KafkaSource(
            settings, pipeline.topic_into(stage), pipeline.group(stage), stage=stage
        )
        self.sink = KafkaSink(
            settings,
            output_topic=pipeline.topic_out_of(stage),
            dlq_topic=pipeline.dlq_topic,
            review_topic=pipeline.review_topic,
            stage=stage,
        )
        self.report: RunReport | None = None

    def healthy(self) -> tuple[bool, str]:
        for part, (ok, reason) in (
            ("source", self.source.healthy()),
            ("sink", self.sink.healthy()),
        ):
            if not ok:
                return False, f"stage {self.stage} {part}: {reason}"
        return True, f"stage {self.stage} ok"

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
                stages=[self.stage],
                metrics=metrics,
                window=window,
                drain_timeout=drain_timeout,
                stop=stop,
                on_progress=keep,
                progress_interval=0.5,
                runtime=runtime,
            )
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


def _health(workers: Sequence[StageWorker]) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        reasons = []
        for worker in workers:
            ok, reason = worker.healthy()
            if not ok:
                reasons.append(reason)
        return (False, "; ".join(reasons)) if reasons else (True, "ok")

    return check


async def _keep_up_gauge(metrics: PipelineMetrics, workers: Sequence[StageWorker]) -> None:
    while True:
        for worker in workers:
            metrics.set_up(worker.stage, worker.healthy()[0])
        await asyncio.sleep(_HEALTH_INTERVAL)


@contextlib.asynccontextmanager
async def observed(
    metrics: PipelineMetrics,
    workers: Sequence[StageWorker],
    metrics_port: int | None,
    on_metrics: Callable[[str], None] | None,
    metrics_host: str = DEFAULT_HOST,
) -> AsyncIterator[None]:
    """Serve /metrics and /healthz (if a port is given) and keep streamflow_up current."""
    _wire_kafka_metrics(metrics, workers)
    gauge = asyncio.create_task(_keep_up_gauge(metrics, workers))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if metrics_port is not None:
                server = await stack.enter_async_context(
                    open_metrics_server(
                        metrics.registry, metrics_port, host=metrics_host, health=_health(workers)
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
            metrics.set_up(worker.stage, False)


async def run_worker(
    pipeline: Pipeline,
    stage: str,
    settings: KafkaSettings,
    *,
    metrics_port: int | None = None,
    window: int | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float = 30.0,
    registry: CollectorRegistry | None = None,
    on_metrics: Callable[[str], None] | None = None,
    runtime: Runtime | None = None,
    metrics_host: str = DEFAULT_HOST,
) -> RunReport:
    """Run one stage of ``pipeline`` as a member of its consumer group until ``stop``.

    Reads ``pipeline.topic_into(stage)`` in the group ``{pipeline}.{stage}``,
    runs the stage, and writes ``pipeline.topic_out_of(stage)`` (review and
    dead letters to their topics). When ``stop`` is set it stops reading,
    drains what is in flight, flushes the producer and commits the final
    watermark before it returns.

    Args:
        pipeline: the pipeline.
        stage: the stage this worker runs.
        settings: broker settings.
        metrics_port: serve ``/metrics`` and ``/healthz`` on this port (0: any free one).
        window: most events inside this worker at once (default: the pipeline's).
        stop: set it to stop (signal handlers do); the worker runs until then.
        drain_timeout: seconds to finish in-flight work after ``stop``.
        registry: Prometheus registry to register in (default: a new one).
        on_metrics: called with the metrics server's base URL once it listens.
        runtime: the runtime (limiters, collector tuning); default: one of its own.
        metrics_host: interface the metrics server binds (default 127.0.0.1).

    Returns:
        The worker's run report; ``report.error`` holds a fatal error, if one stopped it.

    Raises:
        ConfigError: no such stage, or the metrics port cannot be bound.
        TransportError: the broker cannot be reached to create the topics.
    """
    worker = StageWorker(pipeline, stage, settings)
    await create_topics(settings, pipeline.topics())
    metrics = PipelineMetrics(registry or CollectorRegistry(), pipeline.name)
    async with observed(metrics, [worker], metrics_port, on_metrics, metrics_host):
        return await worker.run(
            metrics,
            window=window,
            drain_timeout=drain_timeout,
            stop=stop or asyncio.Event(),
            runtime=runtime,
        )
