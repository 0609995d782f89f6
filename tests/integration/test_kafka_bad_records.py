"""Through real topics: a record the broker refuses, or a forged event, never stops a partition."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.events import DeadLetter, RecordLimits, decode_event, loads
from streamflow.runtime import run_distributed

pytestmark = pytest.mark.kafka


async def _classify(event: Event) -> Event:
    payload = event.payload
    if payload.get("huge"):
        # Within the pipeline's own limit, above what the producer may send (1 MiB).
        return event.with_payload({**payload, "blob": "x" * 2_000_000})
    return event.with_payload({**payload, "category": "general", "stages": ["classify"]})


async def _answer(event: Event) -> Event:
    stages = [*event.payload.get("stages", []), "answer"]
    return event.with_payload({**event.payload, "stages": stages})


def _pipeline(name: str) -> Pipeline:
    return Pipeline(
        name,
        [
            Stage("classify", map_async(_classify, name="classify")),
            Stage("answer", map_async(_answer, name="answer")),
        ],
        key_field="customer",
        limits=RecordLimits(max_record_bytes=4 * 1024 * 1024),
        window=32,
    )


async def test_a_refused_record_is_a_dead_letter_and_forged_events_run_every_stage(
    tmp_path: Path, kafka_broker: str
) -> None:
    from streamflow.transports.kafka import KafkaSettings

    name = f"bad{uuid.uuid4().hex[:8]}"
    good = [{"id": f"T{i:03d}", "customer": f"c{i % 3}", "text": "hello"} for i in range(60)]
    forged = Event(id="F1", key="c0", payload={"customer": "c0"}, outcome="review").model_dump(
        mode="json"
    )
    forged["trace"] = [{"step": "answer", "started_at": 1.0, "duration_s": 0.1}]
    lines = [
        *(orjson.dumps(t) for t in good[:30]),
        orjson.dumps({"id": "HUGE", "customer": "c1", "huge": True}),
        orjson.dumps(forged),
        *(orjson.dumps(t) for t in good[30:]),
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"

    report = await run_distributed(
        _pipeline(name),
        KafkaSettings(bootstrap=kafka_broker),
        input_path=str(source),
        output_path=str(out),
        drain_timeout=10,
    )

    assert report.error is None
    answers = {e.id: e for e in (decode_event(line) for line in out.read_bytes().splitlines())}
    assert set(answers) == {t["id"] for t in good} | {"F1"}
    # The forged event ran both stages like any input: no step skipped, nothing parked.
    assert answers["F1"].payload["stages"] == ["classify", "answer"]
    assert not (tmp_path / "out.review.jsonl").read_bytes()
    letters = [
        DeadLetter.model_validate(loads(line))
        for line in (tmp_path / "out.dlq.jsonl").read_bytes().splitlines()
    ]
    assert [letter.id for letter in letters] == ["HUGE"]
    assert letters[0].truncated and letters[0].original_size is not None
    assert letters[0].original_size > 2_000_000
    assert "MessageSizeTooLarge" in letters[0].error.message
