"""Typed steps through real topics: the step after a hop gets its model, not a dict."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from streamflow.events import decode_event, dumps

pytestmark = pytest.mark.kafka

PIPELINE = textwrap.dedent(
    """
    from pydantic import BaseModel

    from streamflow import Pipeline, Stage, map_async


    class Ticket(BaseModel):
        id: str
        customer: str
        text: str


    class Classified(BaseModel):
        id: str
        customer: str
        text: str
        label: str


    class Answer(BaseModel):
        id: str
        reply: str
        seen_as: str


    async def classify(t: Ticket) -> Classified:
        return Classified(**t.model_dump(), label="billing" if "invoice" in t.text else "general")


    def answer(c: Classified) -> Answer:
        # After the hop the payload must be the model again, as in one process.
        return Answer(id=c.id, reply=f"about {{c.label}}", seen_as=type(c).__name__)


    pipeline = Pipeline(
        "{name}",
        [Stage("classify", map_async(classify)), Stage("answer", map_async(answer))],
        input_model=Ticket,
        key_field="customer",
    )
    """
)


def test_a_typed_step_after_a_kafka_hop_gets_its_model(tmp_path: Path, kafka_broker: str) -> None:
    name = f"typed{uuid.uuid4().hex[:8]}"
    pipeline_file = tmp_path / "pipeline.py"
    pipeline_file.write_text(PIPELINE.format(name=name))
    texts = ["my invoice is wrong", "hello there"]
    lines = [
        dumps({"id": f"t-{n:02d}", "customer": f"c-{n % 3}", "text": texts[n % 2]})
        for n in range(20)
    ]
    source = tmp_path / "tickets.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "answers.jsonl"

    argv = ["run", str(pipeline_file), "--broker", kafka_broker, "-i", str(source)]
    run = subprocess.run(
        [sys.executable, "-m", "streamflow", *argv, "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )

    assert run.returncode == 0, run.stderr
    answers = {e.id: e for e in (decode_event(line) for line in out.read_bytes().splitlines())}
    assert sorted(answers) == [f"t-{n:02d}" for n in range(20)]
    assert {a.payload["seen_as"] for a in answers.values()} == {"Classified"}
    assert answers["t-00"].payload["reply"] == "about billing"
