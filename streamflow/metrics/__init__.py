"""Prometheus metrics: collectors that take a registry, and the /metrics + /healthz server."""

from prometheus_client import CollectorRegistry

from streamflow.metrics._batched import BatchedDurations, Durations
from streamflow.metrics._collectors import PipelineMetrics, StageMetrics
from streamflow.metrics._names import METRIC_NAMES
from streamflow.metrics._server import DEFAULT_HOST, Health, MetricsServer, open_metrics_server

__all__ = [
    "DEFAULT_HOST",
    "METRIC_NAMES",
    "BatchedDurations",
    "CollectorRegistry",
    "Durations",
    "Health",
    "MetricsServer",
    "PipelineMetrics",
    "StageMetrics",
    "open_metrics_server",
]
