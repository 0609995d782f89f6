"""Optional OpenTelemetry spans: one span per finished event, one child per step.

Only the OpenTelemetry *API* is used; spans go wherever the application's SDK
and exporter send them (nowhere, until one is configured).
"""

from __future__ import annotations

import os
from typing import Any

from streamflow.errors import ConfigError
from streamflow.events import Event

__all__ = ["OTEL_ENV", "EventSpans", "spans_from_env"]

OTEL_ENV = "STREAMFLOW_OTEL"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class EventSpans:
    """Turns each finished event's trace into OpenTelemetry spans.

    Args:
        pipeline: the pipeline name (the root span is ``"{pipeline} event"``).
        tracer_provider: an OpenTelemetry TracerProvider (default: the global one).

    Raises:
        ConfigError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, pipeline: str, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace import Status, StatusCode
        except ImportError as exc:
            raise ConfigError(
                f"{OTEL_ENV} is set but OpenTelemetry is not installed; "
                "pip install opentelemetry-api (and an SDK/exporter), or unset it"
            ) from exc
        self._trace = trace
        self._error = Status(StatusCode.ERROR)
        self.pipeline = pipeline
        self.tracer = trace.get_tracer("streamflow", tracer_provider=tracer_provider)

    def export(self, event: Event) -> None:
        """Emit the spans of one finished event (its steps as children)."""
        if not event.trace:
            return
        start = min(r.started_at for r in event.trace)
        end = max(r.started_at + r.duration_s for r in event.trace)
        root = self.tracer.start_span(
            f"{self.pipeline} event",
            start_time=_ns(start),
            attributes={
                "streamflow.pipeline": self.pipeline,
                "streamflow.event_id": event.id,
                "streamflow.key": event.key or "",
                "streamflow.outcome": event.outcome,
                "streamflow.attempts": event.attempts,
            },
        )
        context = self._trace.set_span_in_context(root)
        for record in event.trace:
            span = self.tracer.start_span(
                record.step,
                context=context,
                start_time=_ns(record.started_at),
                attributes={
                    "streamflow.attempt": record.attempt,
                    "streamflow.outcome": record.outcome,
                    "gen_ai.request.model": record.model or "",
                    "gen_ai.usage.input_tokens": record.tokens_in,
                    "gen_ai.usage.output_tokens": record.tokens_out,
                    # A model without a price has no cost attribute: unknown, not 0.
                    **(
                        {"streamflow.cost_usd": record.cost_usd}
                        if record.cost_usd is not None
                        else {}
                    ),
                },
            )
            if record.outcome == "failed":
                span.set_status(self._error)
            span.end(end_time=_ns(record.started_at + record.duration_s))
        if event.outcome == "failed":
            root.set_status(self._error)
        root.end(end_time=_ns(end))


def spans_from_env(pipeline: str) -> EventSpans | None:
    """Return span export when ``STREAMFLOW_OTEL`` is set to 1/true/yes, else None.

    Raises:
        ConfigError: it is set but OpenTelemetry is not installed.
    """
    if os.environ.get(OTEL_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return EventSpans(pipeline)
    return None
