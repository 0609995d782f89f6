"""Topic control and the small Kafka commands, as a user runs them against a real broker.

Workers do not create topics unless asked; `topics create` takes partitions,
replication factor and topic configs and refuses a bare pipeline name; a
pipeline can plug into topics that exist under other names; `consume` stops
on the first SIGTERM and says how many records it wrote.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from streamflow.events import decode_event, dumps

pytestmark = pytest.mark.kafka

PIPELINE = textwrap.dedent(
    """
    from streamflow import Pipeline, Stage, map_async


    async def shout(event):
        return event.with_payload({{**event.payload, "text": event.payload["text"].upper()}})


    pipeline = Pipeline(
        "{name}",
        [Stage("shout", map_async(shout, name="shout"))],
        input_topic="{input_topic}",
        output_topic="{output_topic}",
    )
    """
)


def _env(broker: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAMFLOW_KAFKA_") and k != "STREAMFLOW_BROKER"
    }
    env["STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS"] = broker
    return env


def _streamflow(broker: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(broker),
        stdin=subprocess.DEVNULL,
    )


def _pipeline(tmp_path: Path, name: str, input_topic: str, output_topic: str) -> Path:
    path = tmp_path / f"{name}_pipeline.py"
    path.write_text(PIPELINE.format(name=name, input_topic=input_topic, output_topic=output_topic))
    return path


async def _topic_config(broker: str, topic: str) -> dict[str, str]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streamflow.transports.kafka import KafkaSettings, make_admin

    admin = make_admin(KafkaSettings(bootstrap_servers=broker))
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return {entry[0]: entry[1] for response in described for entry in response.resources[0][4]}


def test_a_worker_without_its_topics_stops_and_names_topics_create(
    tmp_path: Path, kafka_broker: str
) -> None:
    name = f"bare{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(tmp_path, name, f"{name}.in", f"{name}.out")

    started = _streamflow(kafka_broker, "worker", str(pipeline), "--stage", "shout")

    errors = [line for line in started.stderr.splitlines() if line.startswith("error:")]
    assert started.returncode == 2, started.stderr
    assert len(errors) == 1 and "streamflow topics create" in errors[0], started.stderr
    assert f"{name}.in" in errors[0]
    described = _streamflow(kafka_broker, "topics", "describe", str(pipeline))
    assert f"{name}.in: 0 partitions" in described.stdout, described.stdout


def test_a_worker_creates_its_topics_with_the_partitions_it_is_given(
    tmp_path: Path, kafka_broker: str
) -> None:
    name = f"sized{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(tmp_path, name, f"{name}.in", f"{name}.out")
    alone = _streamflow(
        kafka_broker, "worker", str(pipeline), "--stage", "shout", "--partitions", "5"
    )
    assert alone.returncode == 2 and "--create-topics" in alone.stderr, alone.stderr

    command = ["worker", str(pipeline), "--stage", "shout", "--create-topics", "--partitions", "5"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamflow", *command],
        env=_env(kafka_broker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        described = ""
        while time.monotonic() < deadline and worker.poll() is None:
            described = _streamflow(kafka_broker, "topics", "describe", str(pipeline)).stdout
            if f"{name}.dlq: 5 partitions" in described:
                break
            time.sleep(0.5)
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    for topic in ("in", "out", "dlq", "review"):
        assert f"{name}.{topic}: 5 partitions" in described, described


def test_topics_create_refuses_a_bare_name_and_takes_replication_and_configs(
    tmp_path: Path, kafka_broker: str
) -> None:
    name = f"made{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(tmp_path, name, f"{name}.in", f"{name}.out")

    bare = _streamflow(kafka_broker, "topics", "create", name)
    assert bare.returncode == 2
    assert "needs the stages" in bare.stderr and "pipeline file" in bare.stderr

    made = _streamflow(
        kafka_broker,
        "topics",
        "create",
        str(pipeline),
        "--partitions",
        "2",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=3600000",
    )
    assert made.returncode == 0, made.stderr
    assert f"{name}.in: created" in made.stdout and f"{name}.review: created" in made.stdout
    assert asyncio.run(_topic_config(kafka_broker, f"{name}.in"))["retention.ms"] == "3600000"
    described = _streamflow(kafka_broker, "topics", "describe", str(pipeline))
    assert f"{name}.in: 2 partitions" in described.stdout, described.stdout


def test_a_pipeline_plugs_into_topics_named_by_the_user_and_consume_stops_on_one_sigterm(
    tmp_path: Path, kafka_broker: str
) -> None:
    name = f"plug{uuid.uuid4().hex[:8]}"
    inbox, answers = f"support-{name}.tickets", f"support-{name}.answers"
    pipeline = _pipeline(tmp_path, name, inbox, answers)
    made = _streamflow(kafka_broker, "topics", "create", str(pipeline), "--partitions", "1")
    assert made.returncode == 0, made.stderr
    assert f"{inbox}: created" in made.stdout and f"{answers}: created" in made.stdout
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_bytes(
        b"\n".join(dumps({"id": f"t-{n}", "text": f"ticket {n}"}) for n in range(3)) + b"\n"
    )
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamflow", "worker", str(pipeline), "--stage", "shout"],
        env=_env(kafka_broker),
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out = tmp_path / "answers.jsonl"
    consumer = subprocess.Popen(
        [sys.executable, "-m", "streamflow", "consume", str(pipeline), "--output", str(out)],
        env=_env(kafka_broker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        produced = _streamflow(kafka_broker, "produce", str(pipeline), "--input", str(tickets))
        assert produced.returncode == 0, produced.stderr
        assert f"produced 3 records to {inbox}" in produced.stderr
        deadline = time.monotonic() + 90
        while len(out.read_bytes().splitlines() if out.exists() else []) < 3:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            assert consumer.poll() is None, consumer.communicate()
            time.sleep(0.2)
        # Idle now: one SIGTERM is enough, and the count is printed.
        consumer.send_signal(signal.SIGTERM)
        _, err = consumer.communicate(timeout=30)
    finally:
        for process in (consumer, worker):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        worker_log.close()
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0, err
    assert f"consumed 3 records from {answers}" in err, err
    texts = sorted(decode_event(line).payload["text"] for line in out.read_bytes().splitlines())
    assert texts == ["TICKET 0", "TICKET 1", "TICKET 2"]
