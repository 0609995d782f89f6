"""Optional OpenTelemetry export: a span per event with its steps as children."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.errors import StepFailed
from streamflow.runtime import EventSpans, run_flow
from streamflow.runtime._otel import spans_from_env
from streamflow.transports import EVENT_HEADER, IterableSource, JsonlSink


async def _answer(event: Event) -> Event:
    await asyncio.sleep(0.001)
    if event.id == "e3":
        raise StepFailed("no answer")
    return event


async def test_each_event_becomes_a_span_with_a_child_per_step(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pipeline = Pipeline(
        "otel", [Stage("a", map_async(_answer, name="answer")), Stage("b", map_async(_answer))]
    )
    lines = [f'{{"id":"e{i}"}}'.encode() for i in range(5)]
    await run_flow(
        pipeline,
        IterableSource(lines),
        JsonlSink(tmp_path / "o.jsonl"),
        spans=EventSpans("otel", tracer_provider=provider),
    )
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "otel event"]
    assert sorted(s.attributes["streamflow.event_id"] for s in roots) == [f"e{i}" for i in range(5)]
    failed_root = next(s for s in roots if s.attributes["streamflow.event_id"] == "e3")
    assert not failed_root.status.is_ok
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == failed_root.context.span_id
    ]
    assert [s.name for s in children] == ["answer"]
    ok_root = next(s for s in roots if s.attributes["streamflow.event_id"] == "e0")
    ok_children = [
        s for s in spans if s.parent is not None and s.parent.span_id == ok_root.context.span_id
    ]
    assert sorted(s.name for s in ok_children) == ["_answer", "answer"]
    assert all(s.end_time >= s.start_time for s in spans)


def test_spans_are_off_unless_the_environment_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFLOW_OTEL", raising=False)
    assert spans_from_env("p") is None
    monkeypatch.setenv("STREAMFLOW_OTEL", "1")
    assert isinstance(spans_from_env("p"), EventSpans)


async def test_workers_of_single_stages_export_each_event_once(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = EventSpans("otel", tracer_provider=provider)
    pipeline = Pipeline(
        "otel", [Stage("a", map_async(_answer, name="answer")), Stage("b", map_async(_answer))]
    )
    lines = [f'{{"id":"e{i}"}}'.encode() for i in range(5)]
    between = tmp_path / "a.jsonl"
    # As the Kafka workers do: one run per stage, the first one's output feeding the second.
    await run_flow(pipeline, IterableSource(lines), JsonlSink(between), stages=["a"], spans=spans)
    passed_on = between.read_bytes().splitlines()
    await run_flow(
        pipeline,
        IterableSource(passed_on, headers=[(EVENT_HEADER, b"a")]),
        JsonlSink(tmp_path / "b.jsonl"),
        stages=["b"],
        spans=spans,
    )
    roots = [s for s in exporter.get_finished_spans() if s.name == "otel event"]
    assert sorted(s.attributes["streamflow.event_id"] for s in roots) == [f"e{i}" for i in range(5)]
    steps = [s.name for s in exporter.get_finished_spans() if s.name != "otel event"]
    assert sorted(steps) == ["_answer"] * 4 + ["answer"] * 5
