"""`streamflow run --broker` through real topics, then `dlq replay` of its dead letters."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from streamflow.events import DeadLetter, decode_event, dumps, loads

pytestmark = pytest.mark.kafka

PIPELINE = textwrap.dedent(
    """
    from streamflow import Pipeline, Stage, map_async
    from streamflow.errors import StepFailed


    async def classify(event):
        if "unreadable" in event.payload["text"]:
            raise StepFailed("cannot classify an unreadable ticket", stage="classify")
        category = "billing" if "invoice" in event.payload["text"] else "general"
        return event.with_payload({{**event.payload, "category": category}})


    async def answer(event):
        if "lawyer" in event.payload["text"]:
            return event.evolve(outcome="review", reason="legal threat")
        return event.with_payload({{**event.payload, "answer": "thanks"}})


    pipeline = Pipeline(
        "{name}",
        [
            Stage("classify", map_async(classify, concurrency=4, name="classify")),
            Stage("answer", map_async(answer, concurrency=4, name="answer")),
        ],
        key_field="customer",
        summary_field="category",
    )
    """
)


def _streamflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_run_with_broker_writes_each_ticket_once_and_dlq_replay_sends_them_back(
    tmp_path: Path, kafka_broker: str
) -> None:
    name = f"run{uuid.uuid4().hex[:8]}"
    pipeline_file = tmp_path / "pipeline.py"
    pipeline_file.write_text(PIPELINE.format(name=name))
    texts = ["my invoice is wrong", "hello there", "my lawyer read the invoice", "unreadable"]
    lines = [
        dumps({"id": f"t-{n:03d}", "customer": f"c-{n % 5}", "text": texts[n % 4]})
        for n in range(200)
    ]
    source = tmp_path / "tickets.jsonl"
    source.write_bytes(b"\n".join([*lines, b"this line is not json"]) + b"\n")
    out = tmp_path / "answers.jsonl"

    run = _streamflow(
        "run",
        str(pipeline_file),
        "--broker",
        kafka_broker,
        "-i",
        str(source),
        "-o",
        str(out),
        "--no-progress",
    )

    assert run.returncode == 0, run.stderr
    answers = [decode_event(line) for line in out.read_bytes().splitlines()]
    review_lines = (tmp_path / "answers.review.jsonl").read_bytes().splitlines()
    reviews = [decode_event(line) for line in review_lines]
    letters = [
        DeadLetter.model_validate(loads(line))
        for line in (tmp_path / "answers.dlq.jsonl").read_bytes().splitlines()
    ]
    assert sorted(e.id for e in answers) == [f"t-{n:03d}" for n in range(200) if n % 4 in (0, 1)]
    assert sorted(e.id for e in reviews) == [f"t-{n:03d}" for n in range(200) if n % 4 == 2]
    assert sorted(str(d.id) for d in letters if d.stage == "classify") == [
        f"t-{n:03d}" for n in range(200) if n % 4 == 3
    ]
    assert [d.original for d in letters if d.stage == "decode"] == ["this line is not json"]
    assert all(e.key is not None and e.key.startswith("c-") for e in answers)
    assert "latency per stage" in run.stderr and "201 read, 201 accounted for" in run.stderr

    def replay(*flags: str) -> subprocess.CompletedProcess[str]:
        done = _streamflow(
            "dlq",
            "replay",
            str(pipeline_file),
            "--broker",
            kafka_broker,
            "--stage",
            "classify",
            *flags,
        )
        assert done.returncode == 0, done.stderr
        return done

    listed = replay("--dry-run")
    assert "would replay 50" in listed.stdout, listed.stdout
    assert f"t-003\t-> {name}.in" in listed.stdout
    first = replay()
    assert "replayed 50" in first.stdout and "never decoded (not replayed) 1" in first.stdout
    # The replay group committed what it sent: nothing new arrived since.
    second = replay()
    assert "dead letters read 0: replayed 0" in second.stdout, second.stdout
    again = replay("--from-beginning", "--dry-run")
    assert "would replay 50" in again.stdout, again.stdout
    consumed = _streamflow(
        "consume",
        name,
        "--broker",
        kafka_broker,
        "--topic",
        "dlq",
        "--output",
        "-",
        "--idle-timeout",
        "2",
    )
    assert consumed.returncode == 0, consumed.stderr
    assert len(consumed.stdout.splitlines()) == 51
    described = _streamflow("topics", "describe", str(pipeline_file), "--broker", kafka_broker)
    assert described.returncode == 0, described.stderr
    # 201 lines from the run plus the 50 replayed events on the input topic.
    assert f"{name}.in: 3 partitions, 251 records" in described.stdout


def test_consume_from_topics_that_do_not_exist_says_how_to_create_them(
    tmp_path: Path, kafka_broker: str
) -> None:
    name = f"nothing-{uuid.uuid4().hex[:8]}"
    (tmp_path / "p.py").write_text(PIPELINE.format(name=name))
    done = _streamflow(
        "consume",
        str(tmp_path / "p.py"),
        "--broker",
        kafka_broker,
        "--output",
        str(tmp_path / "out.jsonl"),
        "--idle-timeout",
        "1",
    )
    assert done.returncode == 2, done.stderr
    assert f"topic '{name}.out' does not exist" in done.stderr
    assert "streamflow topics create" in done.stderr


def test_consume_refuses_an_existing_output_unless_told_to_overwrite_or_append(
    tmp_path: Path, kafka_broker: str
) -> None:
    import asyncio

    from streamflow.runtime._produce import produce_input
    from streamflow.transports.kafka import KafkaSettings, create_topics

    name = f"keep{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=kafka_broker)
    records = [dumps({"id": f"r-{n}", "text": "answer"}) for n in range(3)]

    async def fill() -> None:
        # One partition: the records come back in the order they were sent (across
        # partitions, unkeyed records have no order, and a comparison of whole files
        # would fail now and then).
        await create_topics(settings, [f"{name}.out"], partitions=1)
        await produce_input(settings, f"{name}.out", records, key_field=None)

    asyncio.run(fill())
    out = tmp_path / "answers.jsonl"
    out.write_bytes(b"earlier results\n")

    def consume(*flags: str) -> subprocess.CompletedProcess[str]:
        return _streamflow(
            "consume", name, "--broker", kafka_broker, "--output", str(out), "--count", "3",
            *flags,
        )  # fmt: skip

    refused = consume()
    assert refused.returncode == 2, refused.stderr
    assert "exists; pass --overwrite to replace the results or --append" in refused.stderr
    assert out.read_bytes() == b"earlier results\n"
    both = consume("--overwrite", "--append")
    assert both.returncode == 2 and "not both" in both.stderr
    appended = consume("--append")
    assert appended.returncode == 0, appended.stderr
    assert out.read_bytes().splitlines() == [b"earlier results", *records]
    replaced = consume("--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert out.read_bytes().splitlines() == records
