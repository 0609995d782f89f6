"""The support-ticket example: its data, its ticket generator, and its pipeline end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import reactivex

from operators import LinearTextClassifier, find_pii, read_field
from operators.models import load_articles, load_labelled_examples
from streamflow.cli import load_pipeline
from streamflow.events import Event, decode_event, encode_event

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support_tickets"


def load_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"support_tickets_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_module("generate_tickets")


@pytest.fixture(scope="module")
def tickets(generator: ModuleType) -> list[Any]:
    return list(generator.generate_tickets(2500, 7))


def test_knowledge_base_and_training_set_cover_the_categories() -> None:
    articles = load_articles(EXAMPLE / "data" / "knowledge_base.jsonl")
    examples = load_labelled_examples(EXAMPLE / "data" / "training.jsonl")

    labels = Counter(label for _, label in examples)
    covered = {c for a in articles for c in a.categories}
    assert len(articles) >= 30
    assert len(examples) >= 200
    assert len(labels) >= 6
    assert min(labels.values()) >= 20, "every category needs enough examples"
    assert set(labels) <= covered, "every category has help articles"


def test_generator_is_deterministic_for_a_seed(generator: ModuleType, tickets: list[Any]) -> None:
    again = list(generator.generate_tickets(2500, 7))
    other = list(generator.generate_tickets(2500, 8))

    assert [t.line for t in again] == [t.line for t in tickets]
    assert [t.line for t in other] != [t.line for t in tickets]


def test_generated_tickets_are_varied_with_pii_and_a_few_malformed_lines(
    tickets: list[Any],
) -> None:
    invalid_json = missing_field = with_pii = 0
    bodies: set[str] = set()
    for ticket in tickets:
        try:
            row = json.loads(ticket.line)
        except json.JSONDecodeError:
            invalid_json += 1
            assert ticket.malformed
            continue
        if not {"id", "customer_id", "subject", "body"} <= row.keys():
            missing_field += 1
            assert ticket.malformed
            continue
        bodies.add(row["body"])
        with_pii += bool(find_pii(row["body"]))

    malformed = invalid_json + missing_field
    assert len(tickets) == 2500
    assert invalid_json > 0 and missing_field > 0
    assert 0.002 <= malformed / len(tickets) <= 0.01
    assert with_pii / len(tickets) >= 0.08
    assert len(bodies) >= 2000
    assert len({t.category for t in tickets}) == 8


def test_generator_command_writes_the_file(generator: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "tickets.jsonl"

    assert generator.main(["--count", "120", "--seed", "3", "--out", str(out)]) == 0

    assert len(out.read_text().splitlines()) == 120


def test_classifier_holds_up_on_generated_tickets(tickets: list[Any]) -> None:
    model = LinearTextClassifier.from_examples(EXAMPLE / "data" / "training.jsonl")
    texts, truth = [], []
    for ticket in tickets:
        if not ticket.malformed:
            row = json.loads(ticket.line)
            texts.append(f"{row['subject']}\n{row['body']}")
            truth.append(ticket.category)

    predicted = [label.label for label in model.predict(texts)]

    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    print(f"held-out accuracy on {len(truth)} generated tickets: {accuracy:.3f}")
    assert accuracy >= 0.8


async def run_stages(stages: list[Any], events: list[Event]) -> list[Event]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    out: list[Event] = []
    flow = reactivex.from_iterable(events)
    for stage in stages:
        flow = stage.op(flow)
    flow.subscribe(out.append, done.set_exception, lambda: done.set_result(None))
    await done
    return out


async def test_pipeline_answers_most_tickets_without_leaking_personal_data(
    tickets: list[Any],
) -> None:
    started = time.perf_counter()
    pipeline = load_pipeline(str(EXAMPLE / "pipeline.py"))
    built_in = time.perf_counter() - started
    print(f"pipeline built in {built_in:.2f}s")
    assert [s.name for s in pipeline.stages] == ["classify", "retrieve", "generate", "check"]
    assert pipeline.input_model is not None
    model = pipeline.input_model
    events = [
        Event(id=row["id"], key=row["customer_id"], payload=model.model_validate(row))
        for row in (json.loads(t.line) for t in tickets[:400] if not t.malformed)
    ]

    out = await run_stages(pipeline.stages, events)

    assert len(out) == len(events)
    outcomes = Counter(e.outcome for e in out)
    assert outcomes["ok"] / len(out) >= 0.85, outcomes
    for event in out:
        payload = event.payload
        assert find_pii(payload.subject) == [] and find_pii(payload.body) == []
        if event.outcome == "ok":
            assert payload.check.outcome == "pass"
            assert payload.answer.citations
            assert set(payload.answer.citations) <= {p.id for p in payload.passages}
            assert find_pii(payload.answer.text) == []
            assert [r.step for r in event.trace] == [
                "redact",
                "classify",
                "retrieve",
                "generate",
                "check",
            ]
        else:
            assert event.outcome == "review"
            assert event.reason


async def test_pipeline_results_survive_the_wire_between_every_stage(
    tickets: list[Any],
) -> None:
    pipeline = load_pipeline(str(EXAMPLE / "pipeline.py"))
    model = pipeline.input_model
    assert model is not None
    rows = [json.loads(t.line) for t in tickets[:60] if not t.malformed]
    events = [Event(id=row["id"], key=row["customer_id"], payload=row) for row in rows]

    for stage in pipeline.stages:
        # What a worker of the next stage gets: bytes decoded back to the input model.
        events = [
            decode_event(encode_event(e), model) if e.active else e
            for e in await run_stages([stage], events)
        ]

    answered = [e for e in events if e.active]
    assert len(answered) >= 0.8 * len(events)
    for event in answered:
        # Decoded as a Ticket, the steps' results ride along as plain extra fields.
        payload = event.payload
        assert read_field(payload, "check.outcome") == "pass"
        passage_ids = {p["id"] for p in read_field(payload, "passages")}
        assert read_field(payload, "answer.citations")[0] in passage_ids
        assert read_field(payload, "classification.label")
