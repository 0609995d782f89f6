"""`streamflow review` over Kafka: running workers pick up what a reviewer approves or sends back.

The stage workers run in this process (``run_worker``) against a real broker;
the review commands run through ``main(argv)`` as a user types them. The test
waits on what arrives in the topics, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from streamflow.cli import main
from streamflow.cli._load import load_pipeline
from streamflow.events import Event, decode_event, dumps, loads
from streamflow.runtime import Pipeline
from streamflow.runtime._produce import produce_input
from streamflow.runtime._worker import run_worker
from streamflow.runtime.review import decisions_topic
from streamflow.transports.kafka import KafkaSettings, consume_events

pytestmark = pytest.mark.kafka

PIPELINE = textwrap.dedent(
    """
    from operators import generate
    from operators.models import ComposedAnswer
    from streamflow import Pipeline, Stage, map_async
    from streamflow.runtime import ReviewPolicy

    class Composer:
        name = "echo"

        async def compose(self, question, *, category, passages, feedback=None):
            if feedback:
                text = f"Revised ({{feedback}})"
            elif "money" in question:
                text = "We will refund you."
            else:
                text = "Thanks, done."
            return ComposedAnswer(text=text, model="echo")

    async def check(event):
        if "refund" in event.payload["answer"]["text"]:
            return event.evolve(outcome="review", reason="promises a refund")
        return event

    pipeline = Pipeline(
        "{name}",
        [
            Stage("generate", generate(Composer(), question_fields=["text"], category_field=None)),
            Stage("check", map_async(check, name="check")),
        ],
        key_field="customer",
        window=16,
        review=ReviewPolicy(rework_stage="generate", feedback_field="check"),
    )
    """
)


class _Topics:
    """Everything that reaches the output and review topics, read without a group."""

    def __init__(self) -> None:
        self.out: dict[str, Event] = {}
        self.review: dict[str, Event] = {}

    async def follow(self, settings: KafkaSettings, pipeline: Pipeline) -> None:
        topics = [pipeline.output_topic, pipeline.review_topic]
        async for topic, value in consume_events(
            settings, topics, group=None, count=None, idle_timeout=None
        ):
            event = decode_event(value)
            target = self.out if topic == pipeline.output_topic else self.review
            target[event.id] = event


async def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _workers(pipeline: Pipeline, settings: KafkaSettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            run_worker(pipeline, s.name, settings, stop=stop, drain_timeout=5, create_topics=True)
        )
        for s in pipeline.stages
    ]
    try:
        yield
    finally:
        stop.set()
        for report in await asyncio.gather(*tasks):
            assert report.error is None


async def _cli(*argv: str) -> tuple[int, Any]:
    """Run ``streamflow`` in a thread (it runs its own event loop); return code and JSON out."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()

    def call() -> int:
        with redirect_stdout(buffer):
            return main(list(argv))

    code = await asyncio.to_thread(call)
    text = buffer.getvalue().strip()
    return code, loads(text) if text.startswith(("[", "{")) else text


async def test_review_over_kafka_approves_to_the_output_and_reworks_through_the_workers(
    kafka_broker: str, tmp_path: Path
) -> None:
    name = f"review-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "desk_pipeline.py"
    path.write_text(PIPELINE.format(name=name))
    pipeline = load_pipeline(str(path))
    settings = KafkaSettings(bootstrap=kafka_broker)
    broker = ["--broker", kafka_broker]
    seen = _Topics()
    follower = asyncio.create_task(seen.follow(settings, pipeline))
    try:
        async with _workers(pipeline, settings):
            tickets = [
                {"id": "t1", "customer": "c1", "text": "I want my money back"},
                {"id": "t2", "customer": "c2", "text": "hello"},
                {"id": "t3", "customer": "c3", "text": "more money please"},
            ]
            await produce_input(
                settings, pipeline.input_topic, [dumps(t) for t in tickets], key_field="customer"
            )
            await _until(lambda: len(seen.review) == 2 and len(seen.out) == 1, "the first pass")

            code, rows = await _cli("review", "list", str(path), *broker, "--json")
            assert code == 0
            assert sorted(r["id"] for r in rows) == ["t1", "t3"]
            assert {r["reason"] for r in rows} == {"promises a refund"}

            code, done = await _cli("review", "approve", "t1", str(path), *broker, "--json")
            assert (code, done["sent_to"]) == (0, "output")
            note = "offer a callback instead"
            code, done = await _cli(
                "review", "reject", "t3", str(path), *broker, "--note", note, "--json"
            )
            assert (code, done["sent_to"]) == (0, "generate")

            await _until(lambda: {"t1", "t3"} <= seen.out.keys(), "the decided events")
            approved = seen.out["t1"]
            assert approved.trace[-1].step == "review" and approved.trace[-1].outcome == "approved"
            reworked = seen.out["t3"]
            assert reworked.payload["answer"]["text"] == f"Revised (reviewer: {note})"
            assert [r.step for r in reworked.trace] == [
                "generate",
                "check",
                "review",
                "generate",
                "check",
            ]

            code, rows = await _cli("review", "list", str(path), *broker, "--json")
            assert (code, rows) == (0, [])
            code, _ = await _cli("review", "approve", "t3", str(path), *broker)
            assert code == 2
            decided = [
                loads(value)
                async for _, value in consume_events(
                    settings, [decisions_topic(pipeline)], group=None, count=2, idle_timeout=10
                )
            ]
            assert sorted((d["id"], d["decision"]) for d in decided) == [
                ("t1", "approved"),
                ("t3", "rejected"),
            ]
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
