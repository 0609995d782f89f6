"""The streamflow variant: the same steps as a Pipeline run by ``run_flow``, with metrics."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry

from bench.workloads import Workload, input_lines, make_step, percentile
from streamflow.errors import StreamflowError
from streamflow.events import Event, encode_event, ticket_of
from streamflow.flow import Ticket
from streamflow.metrics import PipelineMetrics
from streamflow.ops import map_async
from streamflow.runtime import Pipeline, Runtime, Stage, run_flow
from streamflow.transports import IterableSource, Record

__all__ = ["NullSink", "build_pipeline", "run_streamflow"]


class NullSink:
    """A Sink that encodes every event (as a real sink must) and drops the bytes.

    It keeps every read-to-written latency, exactly as the hand-written baseline
    does (a clock read and an append per event on both sides), rather than the
    run report's sketch, so the two p50/p99 figures are computed the same way.

    Args:
        keep_latencies: record each event's read-to-written latency.
    """

    def __init__(self, *, keep_latencies: bool = True) -> None:
        self.latencies: list[float] | None = [] if keep_latencies else None
        self.written = 0
        self.rejected = 0
        self.abandoned = 0

    def write(self, event: Event) -> None:
        """Encode ``event`` and note its latency (the runtime returns its credit)."""
        encode_event(event)
        self.written += 1
        if self.latencies is not None:
            ticket = ticket_of(event)
            if ticket is not None:
                self.latencies.append(time.perf_counter() - ticket.read_at)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Count an undecodable record (the runtime returns its credit)."""
        self.rejected += 1

    def abandon(self, event: Event) -> None:
        """Count an event that shutdown could not finish."""
        self.abandoned += 1

    async def flush(self) -> None:
        """Nothing is buffered."""

    async def aclose(self) -> None:
        """Nothing to close."""


def build_pipeline(workload: Workload, *, window: int = 2048) -> Pipeline:
    """One stage per step, each ``map_async(step, concurrency=workload.concurrency)``."""
    stages = [
        Stage(
            f"s{i}",
            map_async(make_step(ms, f"s{i}"), concurrency=workload.concurrency, name=f"s{i}"),
        )
        for i, ms in enumerate(workload.latencies_ms)
    ]
    return Pipeline(f"bench-{workload.name.lower()}", stages, window=window)


async def run_streamflow(workload: Workload, *, keep_latencies: bool = True) -> dict[str, Any]:
    """Run ``workload`` through streamflow from an in-memory source to a NullSink.

    Returns:
        events/s, p50/p99 end-to-end latency (ms) and the event count.
    """
    pipeline = build_pipeline(workload)
    metrics = PipelineMetrics(CollectorRegistry(), pipeline.name)
    sink = NullSink(keep_latencies=keep_latencies)
    source = IterableSource(input_lines(workload.events))
    t0 = time.perf_counter()
    # Tuned as the CLI runs it: the bench measures what a `streamflow run` costs.
    report = await run_flow(pipeline, source, sink, metrics=metrics, runtime=Runtime(tune_gc=True))
    elapsed = time.perf_counter() - t0
    if report.error is not None:
        raise report.error
    latencies = sink.latencies or []
    return {
        "events": sink.written,
        "eps": sink.written / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }
