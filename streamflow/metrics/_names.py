"""Metric names: a contract that dashboards depend on."""

from __future__ import annotations

__all__ = ["METRIC_NAMES"]

METRIC_NAMES: frozenset[str] = frozenset(
    {
        "streamflow_events_total",
        "streamflow_stage_duration_seconds",
        "streamflow_in_flight",
        "streamflow_buffer_items",
        "streamflow_backpressure_seconds_total",
        "streamflow_consumer_lag",
        "streamflow_paused_partitions",
        "streamflow_committed_offset",
        "streamflow_model_tokens_total",
        "streamflow_model_cost_usd_total",
        "streamflow_model_requests_total",
        "streamflow_rate_limit_wait_seconds_total",
        "streamflow_up",
    }
)
"""Every metric streamflow exports, as Prometheus shows it (counters with ``_total``).

A name here is a contract: dashboards and alerts depend on it, so it changes only
with a release note."""
