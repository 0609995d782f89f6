"""Prometheus metrics: collectors that take a registry, and the /metrics + /healthz server."""

from prometheus_client import CollectorRegistry

from streamflow.metrics._collectors import PipelineMetrics, StageMetrics
from streamflow.metrics._names import METRIC_NAMES
from streamflow.metrics._server import Health, MetricsServer, open_metrics_server

__all__ = [
    "METRIC_NAMES",
    "CollectorRegistry",
    "Health",
    "MetricsServer",
    "PipelineMetrics",
    "StageMetrics",
    "open_metrics_server",
]
