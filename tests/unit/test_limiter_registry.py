"""The limiter registry belongs to a runtime: pipelines share a budget only when they ask to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from flow_helpers import ListSink, lines

from streamflow import Event, Pipeline, Stage, map_async, rate_limit
from streamflow.cli import main
from streamflow.errors import ConfigError
from streamflow.ops import (
    LimiterRegistry,
    RateLimiter,
    SharedLimiter,
    current_limiters,
    reset_shared_limiters,
    shared_limiter,
)
from streamflow.runtime import Runtime, run_flow
from streamflow.runtime._limiters import limiters_from_env
from streamflow.transports import IterableSource

pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


def _calling(name: str, admitted: list[float], **limits: int) -> Pipeline:
    """A pipeline whose one step calls the endpoint ``"model"`` under its shared budget."""

    async def call(event: Event) -> Event:
        admitted.append(asyncio.get_running_loop().time())
        return event

    limiter = shared_limiter("model", **limits)
    return Pipeline(name, [Stage("call", map_async(call, concurrency=8, limiter=limiter))])


def _most_in_one_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


async def test_two_pipelines_with_their_own_runtimes_have_their_own_budgets() -> None:
    a: list[float] = []
    b: list[float] = []
    await asyncio.gather(
        run_flow(_calling("a", a, requests_per_s=2), IterableSource(lines(6)), ListSink()),
        run_flow(_calling("b", b, requests_per_s=2), IterableSource(lines(6)), ListSink()),
    )
    # Each run counts only its own calls: together they send twice the limit.
    assert _most_in_one_second(a) == 2 and _most_in_one_second(b) == 2
    assert _most_in_one_second(a + b) == 4


async def test_two_pipelines_under_one_runtime_share_the_endpoint_budget() -> None:
    a: list[float] = []
    b: list[float] = []
    runtime = Runtime(limiters=LimiterRegistry())
    await asyncio.gather(
        run_flow(
            _calling("a", a, requests_per_s=2),
            IterableSource(lines(6)),
            ListSink(),
            runtime=runtime,
        ),
        run_flow(
            _calling("b", b, requests_per_s=2),
            IterableSource(lines(6)),
            ListSink(),
            runtime=runtime,
        ),
    )
    assert len(a) == len(b) == 6
    assert _most_in_one_second(a + b) == 2
    assert runtime.limiters.statistics()[0].requests == 12


async def test_a_rate_limit_key_draws_from_the_runtime_of_the_run() -> None:
    runtime = Runtime(limiters=LimiterRegistry())
    pipeline = Pipeline("limited", [Stage("wait", rate_limit(key="embed", requests_per_s=5))])
    await run_flow(pipeline, IterableSource(lines(3)), ListSink(), runtime=runtime)
    assert [s.requests for s in runtime.limiters.statistics()] == [3]
    # Nothing reached the registry of code outside any run.
    assert current_limiters().get("embed", requests_per_s=5).statistics().requests == 0


def test_a_handle_is_one_per_key_and_names_its_limits() -> None:
    registry = LimiterRegistry()
    handle = shared_limiter("chat", tokens_per_min=1000)
    assert handle is shared_limiter("chat", tokens_per_min=1000)
    assert handle == SharedLimiter("chat", dict(handle.limits))
    assert handle.limits["tokens_per_min"] == 1000
    assert isinstance(registry.get("chat", tokens_per_min=1000), RateLimiter)


def test_a_registry_refuses_one_key_with_two_budgets() -> None:
    registry = LimiterRegistry()
    registry.get("chat", requests_per_min=10)
    with pytest.raises(ConfigError, match="declared twice"):
        registry.get("chat", requests_per_min=20)


def test_the_environment_picks_in_process_counting_unless_it_names_a_redis() -> None:
    assert limiters_from_env({}).backend.description == "in-process"
    shared = limiters_from_env({"STREAMFLOW_LIMITER_URL": "redis://:secret@cache:6379/2"})
    assert shared.backend.description == "redis://:***@cache:6379/2"
    assert "secret" not in repr(shared)
    with pytest.raises(ConfigError, match="not a Redis URL"):
        limiters_from_env({"STREAMFLOW_LIMITER_URL": "http://cache:6379"})


def test_the_guard_setting_widens_the_windows_of_the_runtimes_limiters() -> None:
    registry = limiters_from_env({"STREAMFLOW_LIMITER_GUARD": "0.4"})
    limiter = registry.get("chat", requests_per_s=1)
    assert isinstance(limiter, RateLimiter)
    assert limiter._request_windows[0].period == pytest.approx(1.4)
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError, match="STREAMFLOW_LIMITER_GUARD"):
            limiters_from_env({"STREAMFLOW_LIMITER_GUARD": bad})


def test_run_with_an_unreachable_limiter_redis_exits_2_before_writing_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kafka_broker import free_port

    pipeline = tmp_path / "limited.py"
    pipeline.write_text(
        "from streamflow import Pipeline, Stage, rate_limit\n"
        "pipeline = Pipeline('limited', [Stage('wait', rate_limit(key='m', requests_per_s=5))])\n"
    )
    tickets = tmp_path / "in.jsonl"
    tickets.write_text('{"id": "a", "text": "hello"}\n')
    monkeypatch.setenv("STREAMFLOW_LIMITER_URL", f"redis://127.0.0.1:{free_port()}/0")
    output = tmp_path / "out.jsonl"
    code = main(["run", str(pipeline), "--input", str(tickets), "--output", str(output)])
    error = capsys.readouterr().err
    assert code == 2
    assert "STREAMFLOW_LIMITER_URL" in error and len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "limited.py"]
