"""Stage workers as separate processes through a real broker: kill -9 loses nothing; backpressure.

Every worker is `python -m streamflow worker ...`, as a user would start it.
The tests wait on what arrives in the result topics, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from streamflow.events import DeadLetter, Event, decode_event, dumps, loads

pytestmark = pytest.mark.kafka

TICKETS_PIPELINE = textwrap.dedent(
    """
    import asyncio

    from streamflow import Pipeline, Stage, map_async
    from streamflow.errors import StepFailed


    async def classify(event):
        text = event.payload["text"]
        if "unreadable" in text:
            raise StepFailed("cannot classify an unreadable ticket", stage="classify")
        category = "billing" if "invoice" in text else "tech" if "error" in text else "general"
        return event.with_payload({{**event.payload, "category": category}})


    async def retrieve(event):
        context = ["kb-" + event.payload["category"]]
        return event.with_payload({{**event.payload, "context": context}})


    async def generate(event):
        await asyncio.sleep(0.02)
        answer = "see " + event.payload["context"][0]
        return event.with_payload({{**event.payload, "answer": answer}})


    async def check(event):
        if "lawyer" in event.payload["text"]:
            return event.evolve(outcome="review", reason="legal threat")
        return event


    pipeline = Pipeline(
        "{name}",
        [
            Stage("classify", map_async(classify, concurrency=8, name="classify")),
            Stage("retrieve", map_async(retrieve, concurrency=8, name="retrieve")),
            Stage("generate", map_async(generate, concurrency=8, name="generate")),
            Stage("check", map_async(check, concurrency=8, name="check")),
        ],
        key_field="customer",
        id_field=None,
        summary_field="category",
        window=64,
    )
    """
)

SLOW_PIPELINE = textwrap.dedent(
    """
    import asyncio

    from streamflow import Pipeline, Stage, map_async


    async def generate(event):
        await asyncio.sleep({delay})
        return event.with_payload({{"ticket": event.payload["ticket"]}})


    pipeline = Pipeline(
        "{name}",
        [Stage("generate", map_async(generate, concurrency=2, name="generate"), concurrency=2)],
        key_field="customer",
        window=16,
    )
    """
)

_TEXTS = (
    "my invoice is wrong",
    "error 500 when I log in",
    "how do I change my plan",
    "I will call my lawyer about this invoice",
    "unreadable %%%% ticket",
)


def ticket_lines(count: int, *, padding: int = 0) -> list[bytes]:
    """Tickets without an id field: ids derive from topic/partition/offset, stable on redelivery."""
    return [
        dumps(
            {
                "ticket": f"t-{n:05d}",
                "customer": f"c-{n % 37}",
                "text": _TEXTS[n % len(_TEXTS)] + (" " + "x" * padding if padding else ""),
            }
        )
        for n in range(count)
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workers:
    """The worker processes a test started (stopped by pid at the end)."""

    pipeline_file: Path
    broker: str
    logs: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, stage: str, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{stage}-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow",
                "worker",
                str(self.pipeline_file),
                "--stage",
                stage,
                "--broker",
                self.broker,
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.started.append(process)
        return process

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-2000:]
            for path in sorted(self.logs.glob("*.log"))
        )

    def stop_all(self, timeout: float = 60.0) -> dict[int, int | None]:
        """SIGTERM every live worker and return each one's exit code."""
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[int, int | None] = {}
        for process in self.started:
            try:
                codes[process.pid] = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[process.pid] = process.wait()
        return codes


@pytest.fixture
def workers(tmp_path: Path, kafka_broker: str) -> Iterator[Callable[[str], Workers]]:
    made: list[Workers] = []

    def make(source: str) -> Workers:
        pipeline_file = tmp_path / f"pipeline_{len(made)}.py"
        pipeline_file.write_text(source)
        logs = tmp_path / f"logs_{len(made)}"
        logs.mkdir()
        made.append(Workers(pipeline_file, kafka_broker, logs))
        return made[-1]

    yield make
    for group in made:
        group.stop_all(timeout=30)


@dataclass
class Results:
    """Every record seen in .out/.review/.dlq, by ticket."""

    by_ticket: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    records: int = 0

    def add(self, topic: str, value: bytes) -> None:
        event: Event | None
        if topic.endswith(".dlq"):
            event = DeadLetter.model_validate(loads(value)).event
        else:
            event = decode_event(value)
        assert event is not None, f"a dead letter without its event: {value[:200]!r}"
        self.by_ticket.setdefault(event.payload["ticket"], []).append((topic, event.id))
        self.records += 1


async def _collect(broker: str, pipeline: str, results: Results) -> None:
    from streamflow.transports.kafka import KafkaSettings, consume_events

    topics = [f"{pipeline}.out", f"{pipeline}.review", f"{pipeline}.dlq"]
    settings = KafkaSettings(bootstrap=broker)
    async for topic, value in consume_events(
        settings, topics, group=None, count=None, idle_timeout=None
    ):
        results.add(topic, value)


async def _produce(broker: str, topic: str, lines: list[bytes]) -> int:
    from streamflow.transports.kafka import KafkaSettings, produce_lines

    return await produce_lines(KafkaSettings(bootstrap=broker), topic, lines, key_field="customer")


async def _create_topics(broker: str, pipeline: str, partitions: int) -> None:
    from streamflow.transports.kafka import KafkaSettings, create_topics

    suffixes = ["in", "classify", "retrieve", "generate", "out", "dlq", "review"]
    await create_topics(
        KafkaSettings(bootstrap=broker),
        [f"{pipeline}.{s}" for s in suffixes],
        partitions=partitions,
    )


async def _record_counts(broker: str, topics: list[str]) -> dict[str, int]:
    from streamflow.transports.kafka import KafkaSettings, describe_topics

    described = await describe_topics(KafkaSettings(bootstrap=broker), topics)
    return {topic: sum(info["end_offsets"].values()) for topic, info in described.items()}


async def _until(
    predicate: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{log()}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("victim_stage", "others", "total"),
    [
        ("generate", ("classify", "retrieve", "check"), 2000),
        # Three stages fused in one process: no topic between them, one group.
        ("classify,retrieve,generate", ("check",), 1000),
    ],
    ids=["one-stage-per-worker", "fused-stages"],
)
async def test_workers_in_separate_processes_lose_nothing_when_one_is_killed(
    workers: Callable[[str], Workers],
    kafka_broker: str,
    victim_stage: str,
    others: tuple[str, ...],
    total: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The survivor gets the killed worker's partitions once its group session
    # times out: Kafka's smallest default session (6 s) rather than 10 s.
    monkeypatch.setenv("STREAMFLOW_KAFKA_SESSION_TIMEOUT_MS", "6000")
    name = f"tickets{uuid.uuid4().hex[:8]}"
    group = workers(TICKETS_PIPELINE.format(name=name))
    await _create_topics(kafka_broker, name, partitions=4)
    generate_ports = {_free_port(): None, _free_port(): None}
    for stage in others:
        group.start(stage)
    generators = {
        port: group.start(victim_stage, "--metrics-port", str(port)) for port in generate_ports
    }
    results = Results()
    collector = asyncio.create_task(_collect(kafka_broker, name, results))
    try:
        produced = await _produce(kafka_broker, f"{name}.in", ticket_lines(total))
        assert produced == total

        def busy_generator() -> subprocess.Popen[bytes] | None:
            for port, process in generators.items():
                with contextlib.suppress(OSError):
                    if _scrape(port).get("streamflow_events_total", 0) > 0:
                        return process
            return None

        await _until(lambda: len(results.by_ticket) >= 200, 120, "first results", group.log_tail)
        # Kill a generate worker that owns partitions, while it has work in hand.
        await _until(
            lambda: busy_generator() is not None, 60, "a busy generate worker", group.log_tail
        )
        victim = busy_generator()
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        seen_at_kill = len(results.by_ticket)
        group.start(victim_stage)

        await _until(
            lambda: len(results.by_ticket) >= total, 240, f"all {total} tickets", group.log_tail
        )
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector

    if "," in victim_stage:
        survivor = next(port for port, p in generators.items() if p is not victim)
        with urllib.request.urlopen(f"http://127.0.0.1:{survivor}/metrics", timeout=5) as page:
            exposed = page.read().decode()
        for stage in victim_stage.split(","):
            # Each fused stage keeps its own series.
            assert f'stage="{stage}"' in exposed, f"no metrics for fused stage {stage}"
        ends = await _record_counts(kafka_broker, [f"{name}.classify", f"{name}.retrieve"])
        assert ends == {f"{name}.classify": 0, f"{name}.retrieve": 0}, ends
    codes = group.stop_all()
    del codes[victim.pid]
    assert set(codes.values()) == {0}, f"workers did not exit 0 on SIGTERM: {codes}"

    expected = {f"t-{n:05d}" for n in range(total)}
    lost = expected - set(results.by_ticket)
    assert not lost, f"{len(lost)} tickets lost, e.g. {sorted(lost)[:5]}"
    duplicated = {t: seen for t, seen in results.by_ticket.items() if len(seen) > 1}
    for ticket, seen in duplicated.items():
        ids = {event_id for _, event_id in seen}
        assert len(ids) == 1, f"{ticket} was redelivered under another event id: {seen}"
        assert len({topic for topic, _ in seen}) == 1, f"{ticket} ended in two places: {seen}"
    by_topic: dict[str, int] = {}
    for seen in results.by_ticket.values():
        by_topic[seen[0][0].rsplit(".", 1)[1]] = by_topic.get(seen[0][0].rsplit(".", 1)[1], 0) + 1
    assert by_topic["dlq"] == total // len(_TEXTS)
    assert by_topic["review"] == total // len(_TEXTS)
    print(
        f"\nkill -9 run: {total} tickets, {len(results.by_ticket)} processed "
        f"(out {by_topic['out']}, review {by_topic['review']}, dead-lettered {by_topic['dlq']}), "
        f"{results.records - len(results.by_ticket)} duplicate records over "
        f"{len(duplicated)} tickets, {seen_at_kill} done when the worker was killed"
    )


def _scrape(port: int) -> dict[str, float]:
    """Sum each metric family's samples in /metrics (by name)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            metric, _, value = line.rpartition(" ")
            family = metric.split("{", 1)[0]
            sums[family] = sums.get(family, 0.0) + float(value)
    return sums


async def test_slow_generate_pauses_kafka_partitions_and_keeps_memory_flat(
    workers: Callable[[str], Workers], kafka_broker: str
) -> None:
    name = f"slow{uuid.uuid4().hex[:8]}"
    group = workers(SLOW_PIPELINE.format(name=name, delay=0.002))
    total = 6000
    from streamflow.transports.kafka import KafkaSettings, create_topics

    settings = KafkaSettings(bootstrap=kafka_broker)
    await create_topics(settings, [f"{name}.{s}" for s in ("in", "out", "dlq", "review")])
    # 2 KB per ticket: reading all of them ahead would hold well over the bound below.
    assert await _produce(kafka_broker, f"{name}.in", ticket_lines(total, padding=2000)) == total
    port = _free_port()
    worker = group.start("generate", "--metrics-port", str(port), "--window", "16")
    results = Results()
    collector = asyncio.create_task(_collect(kafka_broker, name, results))
    rss: list[float] = []
    paused_seen = 0.0
    try:
        process = psutil.Process(worker.pid)

        def warmed_up() -> bool:
            with contextlib.suppress(OSError):
                return _scrape(port).get("streamflow_events_total", 0) >= 200
            return False

        await _until(warmed_up, 60, "the worker to process 200 events", group.log_tail)
        while len(results.by_ticket) < total:
            rss.append(process.memory_info().rss / 2**20)
            metrics = await asyncio.to_thread(_scrape, port)
            paused_seen = max(paused_seen, metrics.get("streamflow_paused_partitions", 0))
            assert worker.poll() is None, group.log_tail()
            await asyncio.sleep(0.2)
            if len(rss) > 900:
                raise AssertionError(f"slow run did not finish\n{group.log_tail()}")
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector

    assert paused_seen > 0, "no partition was ever paused while 6000 records waited"
    growth = max(rss) - rss[0]
    print(
        f"\nslow generate: {total} tickets, RSS {rss[0]:.1f} -> max {max(rss):.1f} MiB "
        f"(+{growth:.1f}), paused partitions up to {paused_seen:.0f}"
    )
    assert growth < 30, f"worker RSS grew {growth:.1f} MiB while records waited: {rss[::10]}"
    assert set(results.by_ticket) == {f"t-{n:05d}" for n in range(total)}
