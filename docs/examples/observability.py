"""Metrics on a registry of your own, each event's trace, and OpenTelemetry spans."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from streamflow import Event, Pipeline, Stage, map_async, run_flow
from streamflow.metrics import CollectorRegistry, PipelineMetrics
from streamflow.runtime import EventSpans
from streamflow.transports import CollectingSink, IterableSource


async def lookup(event: Event) -> Event:
    await asyncio.sleep(0.001)  # stands in for a call to a search index
    return event.with_payload({**event.payload, "found": 3})


pipeline = Pipeline("observed", [Stage("lookup", map_async(lookup, concurrency=4))])


async def main() -> tuple[str, list[Event], list[str]]:
    """Run three events; return the metrics text, the events and the span names."""
    # The registry is yours: streamflow never touches the global one.
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, pipeline.name)

    # Spans go wherever your OpenTelemetry SDK sends them; here, to memory.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = EventSpans(pipeline.name, tracer_provider=provider)

    sink = CollectingSink()
    lines = [b'{"id": "e%d", "query": "refund"}' % n for n in range(3)]
    await run_flow(pipeline, IterableSource(lines), sink, metrics=metrics, spans=spans)

    exposition = generate_latest(registry).decode()  # what /metrics serves
    return exposition, sink.events, [span.name for span in exporter.get_finished_spans()]


if __name__ == "__main__":
    text, events, span_names = asyncio.run(main())
    print("\n".join(line for line in text.splitlines() if line.startswith("streamflow_events")))
    for event in events:
        for record in event.trace:  # one record per step: what `streamflow trace ID` prints
            print(event.id, record.step, f"{record.duration_s * 1000:.1f} ms", record.outcome)
    print(span_names)
