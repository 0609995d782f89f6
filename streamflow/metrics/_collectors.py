"""Prometheus collectors for one pipeline (the only prometheus_client import, with _server)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from streamflow.events import StepRecord
from streamflow.metrics._batched import BatchedDurations, Durations

__all__ = ["PipelineMetrics", "StageMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BOUNDS = np.array(_BUCKETS, dtype=np.float64)


class StageMetrics(BatchedDurations):
    """Counts of one stage, kept as plain numbers and turned into metrics at scrape time.

    Every event passes here once per stage; plain attribute arithmetic and a
    list append on the loop thread cost a fraction of a prometheus_client
    child's lock and checks. Durations are folded into the histogram in bulk
    (see :class:`BatchedDurations`).

    Attributes:
        ok, retried, failed, dead_lettered, review, filtered: events leaving the stage,
            by outcome (``review``: parked for a person here; ``filtered``: a filter
            here took it out of the flow).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ok = 0
        self.retried = 0
        self.failed = 0
        self.dead_lettered = 0
        self.review = 0
        self.filtered = 0
        self._buckets = np.zeros(len(_BUCKETS) + 1, dtype=np.int64)
        self._sum = 0.0

    def _fold(self, values: Durations) -> None:
        # An observation equal to a bound counts in that bound's bucket (le).
        where = np.searchsorted(_BOUNDS, values, side="left")
        self._buckets += np.bincount(where, minlength=len(self._buckets))
        self._sum += float(values.sum())

    def histogram(self) -> tuple[list[int], float]:
        """The duration histogram: counts per bucket (the last is +Inf) and their sum."""
        with self._folded():
            return [int(count) for count in self._buckets], self._sum


@dataclass
class _Sampled:
    """Values read at scrape time from the runtime's own statistics."""

    in_flight: dict[str, Callable[[], float]] = field(default_factory=dict)
    buffered: dict[str, Callable[[], float]] = field(default_factory=dict)
    backpressure: dict[str, Callable[[], float]] = field(default_factory=dict)
    lag: Callable[[], Iterable[tuple[str, str, int, float]]] | None = None
    paused: Callable[[], Iterable[tuple[str, float]]] | None = None
    committed: Callable[[], Iterable[tuple[str, str, int, float]]] | None = None


class PipelineMetrics:
    """Every streamflow metric of one pipeline, registered in the registry you pass.

    Args:
        registry: where to register; never the global default unless you pass it.
        pipeline: the pipeline name (a label on everything).
    """

    def __init__(self, registry: CollectorRegistry, pipeline: str) -> None:
        self.registry = registry
        self.pipeline = pipeline
        labels = ["pipeline", "stage"]
        self._tokens = Counter(
            "streamflow_model_tokens",
            "Model tokens, by direction.",
            [*labels, "model", "direction"],
            registry=registry,
        )
        self._cost = Counter(
            "streamflow_model_cost_usd",
            "Model cost in US dollars.",
            [*labels, "model"],
            registry=registry,
        )
        self._requests = Counter(
            "streamflow_model_requests",
            "Model HTTP requests, by status.",
            [*labels, "model", "status"],
            registry=registry,
        )
        self._rate_wait = Counter(
            "streamflow_rate_limit_wait_seconds",
            "Time spent waiting on a rate limit.",
            [*labels, "limiter"],
            registry=registry,
        )
        self._up = Gauge(
            "streamflow_up",
            "1 while the worker is healthy (broker and group reachable).",
            labels,
            registry=registry,
        )
        self._sampled = _Sampled()
        self._stages: dict[str, StageMetrics] = {}
        registry.register(_SampledCollector(pipeline, self._sampled, self._stages))

    def stage(self, name: str) -> StageMetrics:
        """Return the metric children of stage ``name`` (created on first use)."""
        found = self._stages.get(name)
        if found is None:
            found = self._stages[name] = StageMetrics()
        return found

    def model_usage(self, stage: str, record: StepRecord) -> None:
        """Count the tokens and cost a trace record carries."""
        if record.model is None:
            return
        if record.tokens_in:
            self._tokens.labels(self.pipeline, stage, record.model, "in").inc(record.tokens_in)
        if record.tokens_out:
            self._tokens.labels(self.pipeline, stage, record.model, "out").inc(record.tokens_out)
        if record.cost_usd:
            self._cost.labels(self.pipeline, stage, record.model).inc(record.cost_usd)

    def model_request(self, stage: str, model: str, status: str) -> None:
        """Count one HTTP request to a model endpoint."""
        self._requests.labels(self.pipeline, stage, model, status).inc()

    def rate_limit_wait(self, stage: str, limiter: str, seconds: float) -> None:
        """Add time an event waited on a rate limiter."""
        self._rate_wait.labels(self.pipeline, stage, limiter).inc(seconds)

    def set_up(self, stage: str, healthy: bool) -> None:
        """Set the health gauge of a stage's worker."""
        self._up.labels(self.pipeline, stage).set(1 if healthy else 0)

    def sample_stage(
        self,
        stage: str,
        *,
        in_flight: Callable[[], float],
        buffered: Callable[[], float],
    ) -> None:
        """Read a stage's in-flight and buffered counts at scrape time."""
        self._sampled.in_flight[stage] = in_flight
        self._sampled.buffered[stage] = buffered

    def sample_backpressure(self, stage: str, seconds: Callable[[], float]) -> None:
        """Read the seconds a source (feeding ``stage``) waited for credit, at scrape time."""
        self._sampled.backpressure[stage] = seconds

    def sample_kafka(
        self,
        *,
        lag: Callable[[], Iterable[tuple[str, str, int, float]]],
        paused: Callable[[], Iterable[tuple[str, float]]],
        committed: Callable[[], Iterable[tuple[str, str, int, float]]],
    ) -> None:
        """Read consumer lag, paused partitions and committed offsets at scrape time.

        Args:
            lag: yields (stage, topic, partition, lag).
            paused: yields (stage, paused partition count).
            committed: yields (stage, topic, partition, committed offset).
        """
        self._sampled.lag = lag
        self._sampled.paused = paused
        self._sampled.committed = committed


class _SampledCollector(Collector):
    def __init__(self, pipeline: str, sampled: _Sampled, stages: dict[str, StageMetrics]) -> None:
        self.pipeline = pipeline
        self.sampled = sampled
        self.stages = stages

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        s = self.sampled
        labels = ["pipeline", "stage"]
        events = CounterMetricFamily(
            "streamflow_events", "Events leaving a stage, by outcome.", labels=[*labels, "outcome"]
        )
        durations = HistogramMetricFamily(
            "streamflow_stage_duration_seconds",
            "Time an event spent inside a stage.",
            labels=labels,
        )
        for stage, m in list(self.stages.items()):
            for outcome in ("ok", "retried", "failed", "dead_lettered", "review", "filtered"):
                events.add_metric([self.pipeline, stage, outcome], getattr(m, outcome))
            counts, total = m.histogram()
            cumulative = 0
            buckets = []
            for bound, count in zip((*_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(
                    ("+Inf" if bound == float("inf") else repr(float(bound)), cumulative)
                )
            durations.add_metric([self.pipeline, stage], buckets, total)
        yield from (events, durations)
        in_flight = GaugeMetricFamily(
            "streamflow_in_flight", "Events inside a stage now.", labels=labels
        )
        for stage, fn in s.in_flight.items():
            in_flight.add_metric([self.pipeline, stage], fn())
        buffered = GaugeMetricFamily(
            "streamflow_buffer_items", "Events waiting in a stage's input channel.", labels=labels
        )
        for stage, fn in s.buffered.items():
            buffered.add_metric([self.pipeline, stage], fn())
        backpressure = CounterMetricFamily(
            "streamflow_backpressure_seconds",
            "Seconds the source waited for credit (downstream was full).",
            labels=labels,
        )
        for stage, fn in s.backpressure.items():
            backpressure.add_metric([self.pipeline, stage], fn())
        yield from (in_flight, buffered, backpressure)
        lag = GaugeMetricFamily(
            "streamflow_consumer_lag",
            "Records behind the end of the partition.",
            labels=[*labels, "topic", "partition"],
        )
        committed = GaugeMetricFamily(
            "streamflow_committed_offset",
            "Last committed offset (next to read).",
            labels=[*labels, "topic", "partition"],
        )
        paused = GaugeMetricFamily(
            "streamflow_paused_partitions", "Partitions paused for backpressure.", labels=labels
        )
        if s.lag is not None:
            for stage, topic, partition, value in s.lag():
                lag.add_metric([self.pipeline, stage, topic, str(partition)], value)
        if s.committed is not None:
            for stage, topic, partition, value in s.committed():
                committed.add_metric([self.pipeline, stage, topic, str(partition)], value)
        if s.paused is not None:
            for stage, value in s.paused():
                paused.add_metric([self.pipeline, stage], value)
        yield from (lag, committed, paused)
