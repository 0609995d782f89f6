"""One model budget for every process: the Redis limiter against a real redis-server.

Each test starts from the session's own redis-server (``redis_url``), with a
key prefix of its own. Two backends stand for two processes (each has its own
connections and its own limiter objects); the last tests run two real
``streamflow run`` processes against the local OpenAI-wire server.
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from kafka_broker import free_port

import streamflow.limits._redis as redis_limiter_module
from streamflow.errors import ConfigError, Unavailable
from streamflow.events import dumps
from streamflow.limits import RedisLimiters
from streamflow.ops import Limiter
from streamflow.testing import open_openai_server, peak_in_window

ROOT = Path(__file__).resolve().parents[2]

Limits = dict[str, int | None]


def _limits(*, rps: int | None = None, rpm: int | None = None, tpm: int | None = None) -> Limits:
    return {"requests_per_min": rpm, "requests_per_s": rps, "tokens_per_min": tpm}


@pytest.fixture
async def processes(redis_url: str) -> AsyncIterator[Callable[[], RedisLimiters]]:
    """Makes backends that share one key prefix, as processes naming one endpoint do."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    made: list[RedisLimiters] = []

    def make() -> RedisLimiters:
        made.append(RedisLimiters(redis_url, prefix=prefix))
        return made[-1]

    yield make
    for backend in made:
        await backend.aclose()


async def _admitted(limiter: Limiter, tokens: int = 0) -> bool:
    """True when ``acquire`` returns without waiting for a window (these are a minute long)."""
    # Generous: a loaded machine may take seconds for a round trip, never a minute.
    await asyncio.wait_for(limiter.acquire(tokens), 30.0)
    return True


async def _waits(limiter: Limiter, tokens: int = 0) -> bool:
    """True when ``acquire`` is still waiting after a second (an admission takes milliseconds)."""
    task = asyncio.ensure_future(limiter.acquire(tokens))
    done, _ = await asyncio.wait([task], timeout=1.0)
    task.cancel()
    return not done


async def test_two_processes_draw_requests_from_one_budget(
    processes: Callable[[], RedisLimiters],
) -> None:
    first = processes().limiter("chat", _limits(rpm=5))
    second = processes().limiter("chat", _limits(rpm=5))
    for _ in range(3):
        assert await _admitted(first)
    for _ in range(2):
        assert await _admitted(second)
    # Five calls in this minute between them: the sixth waits, whichever process asks.
    assert await _waits(second)
    assert await _waits(first)
    assert second.statistics().requests_in_window == 5


async def test_another_endpoint_key_has_its_own_budget(
    processes: Callable[[], RedisLimiters],
) -> None:
    backend = processes()
    chat = backend.limiter("chat", _limits(rpm=1))
    embed = backend.limiter("embed", _limits(rpm=1))
    assert await _admitted(chat)
    assert await _admitted(embed)
    assert await _waits(chat)


async def test_usage_below_the_estimate_is_refunded_to_every_process(
    processes: Callable[[], RedisLimiters],
) -> None:
    first = processes().limiter("chat", _limits(tpm=1000))
    second = processes().limiter("chat", _limits(tpm=1000))
    permit = await first.acquire(600)
    assert await _waits(second, 600)  # 1200 > 1000 on the estimate
    permit.settle(300)
    await first.settled()  # type: ignore[attr-defined]
    assert await _admitted(second, 600)  # 300 + 600 fits once refunded
    assert second.statistics().tokens_in_window == 900


async def test_usage_above_the_estimate_is_debt_for_every_process(
    processes: Callable[[], RedisLimiters],
) -> None:
    first = processes().limiter("chat", _limits(tpm=1000))
    second = processes().limiter("chat", _limits(tpm=1000))
    (await first.acquire(100)).settle(900)
    await first.settled()  # type: ignore[attr-defined]
    assert await _waits(second, 200)
    assert await _admitted(second, 100)


async def test_a_call_larger_than_the_whole_budget_goes_alone_once_the_window_is_empty(
    processes: Callable[[], RedisLimiters],
) -> None:
    first = processes().limiter("chat", _limits(tpm=1000))
    second = processes().limiter("chat", _limits(tpm=1000))
    assert await _admitted(first, 1500)
    assert await _waits(second, 1)


async def test_a_held_call_stays_counted_for_every_process_until_it_ends(
    processes: Callable[[], RedisLimiters],
) -> None:
    first = processes().limiter("chat", _limits(rps=1))
    second = processes().limiter("chat", _limits(rps=1))
    slow = await first.acquire(hold=True)
    behind = asyncio.ensure_future(second.acquire())
    await asyncio.sleep(2.5)  # two windows pass while the call is in flight
    assert not behind.done()
    slow.settle(0)  # it ended now, and may have reached the endpoint just now
    await first.settled()  # type: ignore[attr-defined]
    await asyncio.wait_for(behind, 30.0)


async def test_a_held_call_never_settled_gives_its_place_back_after_the_hold_limit(
    processes: Callable[[], RedisLimiters], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a worker killed with calls in flight leaves behind (the limit is 2 min).
    monkeypatch.setattr(redis_limiter_module, "HOLD_LIMIT_US", 1_000_000)
    dead = processes().limiter("chat", _limits(rps=1))
    alive = processes().limiter("chat", _limits(rps=1))
    await dead.acquire(hold=True)  # never settled
    behind = asyncio.ensure_future(alive.acquire())
    await asyncio.sleep(1.5)  # the window alone would have let it in
    assert not behind.done()
    await asyncio.wait_for(behind, 30.0)


async def test_a_held_call_keeps_the_budget_keys_alive_whatever_settles_after_it(
    processes: Callable[[], RedisLimiters], redis_url: str
) -> None:
    # Keys expire when idle; a settle or a plain admission must not cut that
    # short while another process's call is still held, or a pause of a few
    # seconds in traffic would forget the call in flight (and admit past it).
    backend = processes()
    first = backend.limiter("chat", _limits(rps=5))
    second = processes().limiter("chat", _limits(rps=5))
    await first.acquire(hold=True)  # in flight
    (await second.acquire(hold=True)).settle(0)
    await second.settled()  # type: ignore[attr-defined]
    await second.acquire()  # a call that does not hold
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = await client.keys(f"{backend.prefix}*")
        assert keys
        for key in keys:
            # Well beyond the 1 s window: the held call's hold limit (2 min).
            assert await client.pttl(key) > 60_000, key
    finally:
        await client.aclose()


async def test_a_refund_wakes_a_waiter_of_the_same_process(
    processes: Callable[[], RedisLimiters],
) -> None:
    limiter = processes().limiter("chat", _limits(tpm=1000))
    permit = await limiter.acquire(600)
    waiter = asyncio.ensure_future(limiter.acquire(600))
    await asyncio.sleep(0.2)
    assert not waiter.done()  # asleep until the window would free, a minute away
    permit.settle(100)
    await asyncio.wait_for(waiter, 10.0)
    assert limiter.statistics().waits == 1


async def test_an_unreachable_redis_fails_at_start_and_admissions_are_unavailable() -> None:
    backend = RedisLimiters(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ConfigError, match="STREAMFLOW_LIMITER_URL"):
        await backend.open()
    with pytest.raises(Unavailable):
        await backend.limiter("chat", _limits(rps=1)).acquire()
    await backend.aclose()


# -- two real processes against the OpenAI-wire server ------------------------

GENERATE = textwrap.dedent(
    """
    import asyncio
    import os
    from pathlib import Path

    from operators.models import ModelClient, ModelEndpoint
    from streamflow import Pipeline, Stage, map_async, shared_limiter

    BASE = os.environ["OPENAI_BASE_URL"]
    client = ModelClient(ModelEndpoint(base_url=BASE))
    READY, GO = os.environ.get("READY_FILE"), os.environ.get("GO_FILE")


    async def generate(event):
        if READY and GO:
            # Both processes start calling at once, however long each took to start.
            Path(READY).touch()
            while not os.path.exists(GO):
                await asyncio.sleep(0.01)
        answer = await client.chat(event.payload["text"], model="gpt-4o-mini", max_tokens=8)
        return event.with_payload({**event.payload, "answer": answer.content})


    # Every process that calls this endpoint names it by its URL.
    limiter = shared_limiter(BASE, requests_per_s=50)
    pipeline = Pipeline(
        "PIPELINE",
        [Stage("generate", map_async(generate, concurrency=32, limiter=limiter))],
        key_field="customer",
    )
    """
)

TICKETS_PER_PROCESS = 150


def _environment(base_url: str, limiter_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMFLOW_LIMITER_URL"}
    env["OPENAI_BASE_URL"] = base_url
    env["PYTHONPATH"] = str(ROOT)
    if limiter_url is not None:
        env["STREAMFLOW_LIMITER_URL"] = limiter_url
    return env


def _tickets(path: Path, prefix: str, count: int) -> Path:
    path.write_bytes(
        b"\n".join(
            dumps({"id": f"{prefix}-{i}", "customer": f"c{i % 17}", "text": f"ticket {i}"})
            for i in range(count)
        )
        + b"\n"
    )
    return path


def _run_two_processes(tmp_path: Path, base_url: str, limiter_url: str | None) -> None:
    pipeline = tmp_path / "generate.py"
    pipeline.write_text(GENERATE.replace("PIPELINE", "generate"))
    go = tmp_path / "go"
    started = []
    for n in range(2):
        env = _environment(base_url, limiter_url)
        env["READY_FILE"], env["GO_FILE"] = str(tmp_path / f"ready-{n}"), str(go)
        tickets = _tickets(tmp_path / f"tickets-{n}.jsonl", f"p{n}", TICKETS_PER_PROCESS)
        command = [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(pipeline),
            "--input",
            str(tickets),
            "--output",
            str(tmp_path / f"answers-{n}.jsonl"),
        ]
        log = (tmp_path / f"run-{n}.log").open("wb")
        started.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    # Under load one process may start seconds after the other and be done before it
    # begins; the budget is shared only if they call the endpoint at the same time.
    deadline = time.monotonic() + 180
    while not all((tmp_path / f"ready-{n}").exists() for n in range(2)):
        logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("run-*.log"))
        assert all(p.poll() is None for p in started), logs
        assert time.monotonic() < deadline, logs
        time.sleep(0.05)
    go.touch()
    for process in started:
        code = process.wait(timeout=180)
        logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("run-*.log"))
        assert code == 0, logs
    for n in range(2):
        answers = (tmp_path / f"answers-{n}.jsonl").read_bytes().splitlines()
        assert len(answers) == TICKETS_PER_PROCESS


async def _busiest_second(tmp_path: Path, limiter_url: str | None) -> float:
    async with open_openai_server() as server:
        await asyncio.to_thread(_run_two_processes, tmp_path, server.base_url, limiter_url)
        served = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert len(served) == 2 * TICKETS_PER_PROCESS
    busiest = peak_in_window(served, 1.0)
    print(f"two processes, limiter {limiter_url or 'in-process'}: busiest second {busiest:.0f}")
    return busiest


async def test_two_processes_with_the_redis_limiter_stay_within_the_endpoint_limit(
    tmp_path: Path, redis_url: str
) -> None:
    assert await _busiest_second(tmp_path, redis_url) <= 50


async def test_two_processes_counting_on_their_own_exceed_the_endpoint_limit(
    tmp_path: Path,
) -> None:
    # What the Redis limiter fixes: each process keeps 50/s, the endpoint sees both.
    assert await _busiest_second(tmp_path, None) > 50


def _run_two_workers(
    tmp_path: Path, base_url: str, limiter_url: str, broker: str, served: Callable[[], int]
) -> None:
    name = f"budget_{uuid.uuid4().hex[:8]}"
    pipeline = tmp_path / "generate.py"
    pipeline.write_text(GENERATE.replace("PIPELINE", name))
    env = _environment(base_url, limiter_url)
    streamflow = [sys.executable, "-m", "streamflow"]
    kafka = ["--broker", broker]
    subprocess.run(
        [*streamflow, "topics", "create", str(pipeline), *kafka, "--partitions", "4"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    workers = []
    for n in range(2):
        log = (tmp_path / f"worker-{n}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [*streamflow, "worker", str(pipeline), "--stage", "generate", *kafka],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        tickets = _tickets(tmp_path / "tickets.jsonl", "w", 2 * TICKETS_PER_PROCESS)
        subprocess.run(
            [*streamflow, "produce", str(pipeline), *kafka, "--input", str(tickets)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 180
        while served() < 2 * TICKETS_PER_PROCESS:
            alive = [w.poll() is None for w in workers]
            logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
            assert all(alive) and time.monotonic() < deadline, logs
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


@pytest.mark.kafka
async def test_two_generate_workers_on_kafka_share_the_redis_budget(
    tmp_path: Path, redis_url: str, kafka_broker: str
) -> None:
    async with open_openai_server() as server:

        def served() -> int:
            return sum(1 for r in list(server.requests) if r.path.endswith("/chat/completions"))

        await asyncio.to_thread(
            _run_two_workers, tmp_path, server.base_url, redis_url, kafka_broker, served
        )
        requests = [r for r in server.requests if r.path.endswith("/chat/completions")]
    busiest = peak_in_window(requests, 1.0)
    print(f"two generate workers on Kafka, limiter in Redis: busiest second {busiest:.0f}")
    assert len(requests) >= 2 * TICKETS_PER_PROCESS
    assert busiest <= 50
