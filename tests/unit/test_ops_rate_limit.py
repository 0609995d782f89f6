"""Rate limits in virtual time: shared budgets, rolling windows, credit held while waiting."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from reactivex.subject import Subject

import streamflow.ops._limiter as _limiter_module
import streamflow.ops._rate_limit as operator_module
from streamflow.errors import ConfigError, Unavailable
from streamflow.events import Event, StepRecord
from streamflow.flow import CreditWindow, Ticket
from streamflow.ops import RetryPolicy, current_stage, instrumentation, map_async, pipe
from streamflow.ops._limiter import RateLimiter, RateLimitStatistics
from streamflow.ops._limiter_registry import reset_shared_limiters, shared_limiter
from streamflow.ops._rate_limit import rate_limit
from streamflow.testing.marbles import run_marbles

pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_shared_limiters()
    yield
    reset_shared_limiters()


def now() -> float:
    return asyncio.get_running_loop().time()


def most_in_any_window(log: list[tuple[float, int]], period: float = 60.0) -> int:
    """The largest sum of amounts admitted in any half-open window [s, s + period)."""
    return max(sum(n for t, n in log if start <= t < start + period) for start, _ in log)


async def run_all(op: object, events: list[Event]) -> list[Event]:
    """Push ``events`` at once through ``op`` and collect what comes out."""
    loop = asyncio.get_running_loop()
    source: Subject[Event] = Subject()
    out: list[Event] = []
    done: asyncio.Future[None] = loop.create_future()
    op(source).subscribe(  # type: ignore[operator]
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    for event in events:
        source.on_next(event)
    source.on_completed()
    await asyncio.wait_for(done, timeout=100_000)
    return out


# -- the layout ----------------------------------------------------------------


def test_the_limiter_lives_apart_from_its_operator() -> None:
    # The limiter is counting only; the operator is the one piece that knows reactivex.
    assert RateLimiter.__module__ == "streamflow.ops._limiter"
    assert shared_limiter.__module__ == "streamflow.ops._limiter_registry"
    assert rate_limit.__module__ == "streamflow.ops._rate_limit"
    assert not hasattr(operator_module, "Permit")
    tree = ast.parse(Path(_limiter_module.__file__).read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any(name.split(".")[0] == "reactivex" for name in imported)


# -- the operator --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _exact_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # Timings below are exact; the jitter guard is tested on its own.
    monkeypatch.setattr(_limiter_module, "DEFAULT_GUARD", 0.0)


async def test_the_jitter_guard_widens_every_window() -> None:
    limiter = RateLimiter(requests_per_s=1, guard=0.05)
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(3):
        await limiter.acquire()
        times.append(round(loop.time(), 3))
    assert [t - times[0] for t in times] == [0.0, 1.05, 2.1]


async def test_requests_per_s_spaces_events_and_keeps_input_order() -> None:
    result = await run_marbles(rate_limit(requests_per_s=2), "(abcde)|")

    assert result.pairs == [(0.0, "a"), (0.0, "b"), (1.0, "c"), (1.0, "d"), (2.0, "e")]
    assert result.completed_at == 2.0


async def test_inactive_events_pass_uncharged_but_stay_behind_waiting_ones() -> None:
    op = rate_limit(requests_per_s=1)
    values = {"f": Event(id="f", outcome="filtered")}
    result = await run_marbles(op, "(abfc)|", values=values)

    assert result.pairs == [(0.0, "a"), (1.0, "b"), (1.0, "f"), (2.0, "c")]
    stats = op.statistics()
    assert isinstance(stats, RateLimitStatistics)
    assert stats.requests == 3


async def test_a_failing_token_estimate_fails_that_event_only() -> None:
    def estimate(event: Event) -> int:
        if event.id == "b":
            raise KeyError("prompt")
        return 10

    result = await run_marbles(
        rate_limit(tokens_per_min=100, tokens=estimate, name="limit"), "abc|"
    )

    assert result.ids == ["a", "b", "c"]
    assert [e.outcome for e in result.events] == ["ok", "failed", "ok"]
    assert result.events[1].error is not None
    assert result.events[1].error.step == "limit"


async def test_waiting_holds_credit_so_a_saturated_endpoint_slows_the_source() -> None:
    loop = asyncio.get_running_loop()
    window = CreditWindow(4)
    limiter = RateLimiter(requests_per_s=1, name="model")
    in_flight = 0
    peak = 0
    emitted: list[float] = []
    out: list[float] = []

    async def call(event: Event) -> Event:
        return event

    chain = pipe(rate_limit(limiter), map_async(call, concurrency=16))
    source: Subject[Event] = Subject()
    done: asyncio.Future[None] = loop.create_future()

    def sink(event: Event) -> None:
        nonlocal in_flight
        in_flight -= 1
        out.append(now())
        event._ticket.release()

    chain(source).subscribe(sink, done.set_exception, lambda: done.set_result(None))
    for i in range(12):
        await window.acquire()
        in_flight += 1
        peak = max(peak, in_flight)
        emitted.append(now())
        event = Event(id=str(i))
        event._ticket = Ticket(window)
        source.on_next(event)
    source.on_completed()
    await done

    assert peak == 4
    assert window.statistics().peak_in_use == 4
    assert out == [float(i) for i in range(12)]
    # The first five go in at once (one passes, four wait holding credit); then one per second.
    assert emitted == [0.0] * 5 + [float(i) for i in range(1, 8)]
    assert window.statistics().waited_seconds == pytest.approx(7.0)
    assert limiter.statistics().waited_seconds > 0


# -- sharing one budget --------------------------------------------------------


async def test_two_stages_sharing_tokens_per_min_never_pass_it_in_any_minute() -> None:
    limiter = shared_limiter("model-endpoint", tokens_per_min=5000)
    calls: list[tuple[float, int]] = []

    def model_call(step: str, used: int, seconds: float) -> object:
        async def call(event: Event) -> Event:
            calls.append((now(), used))
            await asyncio.sleep(seconds)
            own = StepRecord(
                step=step, started_at=0, duration_s=0, tokens_in=used - 50, tokens_out=50
            )
            return event.traced(own)

        call.__name__ = step
        return call

    chain = pipe(
        rate_limit(key="model-endpoint", tokens_per_min=5000, tokens=lambda e: 300),
        map_async(model_call("classify", 300, 0.5), concurrency=64),  # type: ignore[arg-type]
        map_async(
            model_call("generate", 700, 3.0),  # type: ignore[arg-type]
            concurrency=8,
            limiter=limiter,
            tokens=lambda e: 700,
        ),
    )
    out = await run_all(chain, [Event(id=str(i)) for i in range(40)])

    assert len(out) == 40
    assert all(e.outcome == "ok" for e in out)
    assert sum(n for _, n in calls) == 40 * 1000
    assert most_in_any_window(calls) <= 5000
    # The budget was the bottleneck: 40k tokens at 5k/min take at least 7 minutes.
    assert max(t for t, _ in calls) >= 7 * 60
    stats = limiter.statistics()
    assert (stats.requests, stats.tokens) == (80, 40_000)
    assert stats.waits > 0


async def test_two_stages_sharing_requests_per_min_never_pass_it_in_any_minute() -> None:
    limiter = shared_limiter("chat", requests_per_min=10)
    calls: list[tuple[float, int]] = []

    async def call(event: Event) -> Event:
        calls.append((now(), 1))
        await asyncio.sleep(1)
        return event

    chain = pipe(
        map_async(call, concurrency=8, limiter=limiter, name="first"),
        map_async(call, concurrency=8, limiter=shared_limiter("chat", requests_per_min=10)),
    )
    out = await run_all(chain, [Event(id=str(i)) for i in range(25)])

    assert len(out) == 25
    assert len(calls) == 50
    assert most_in_any_window(calls) == 10
    assert max(t for t, _ in calls) >= 4 * 60


def test_a_key_declared_twice_with_other_limits_is_a_config_error() -> None:
    first = shared_limiter("openai:gpt-4o-mini", tokens_per_min=1000)

    assert shared_limiter("openai:gpt-4o-mini", tokens_per_min=1000) is first
    with pytest.raises(ConfigError, match="openai:gpt-4o-mini") as caught:
        shared_limiter("openai:gpt-4o-mini", tokens_per_min=2000)
    assert "tokens_per_min=1000" in str(caught.value)
    assert "tokens_per_min=2000" in str(caught.value)


async def test_rate_limit_with_a_key_draws_from_the_shared_limiter() -> None:
    await run_marbles(rate_limit(key="embed", requests_per_s=5), "(abc)|")

    assert shared_limiter("embed", requests_per_s=5).statistics().requests == 3


def test_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="give requests_per_min"):
        RateLimiter()
    with pytest.raises(ConfigError, match="tokens_per_min must be >= 1"):
        RateLimiter(tokens_per_min=0)
    with pytest.raises(ConfigError, match="not both"):
        rate_limit(RateLimiter(requests_per_s=1), requests_per_s=2)

    async def step(event: Event) -> Event:
        return event

    with pytest.raises(ConfigError, match="limiter"):
        map_async(step, tokens=lambda e: 1)


# -- map_async(limiter=): per model call ---------------------------------------


async def test_every_retry_attempt_waits_for_the_limiter() -> None:
    limiter = RateLimiter(requests_per_min=2)
    attempts_at: list[float] = []

    async def flaky(event: Event) -> Event:
        attempts_at.append(now())
        if len(attempts_at) < 3:
            raise Unavailable("503")
        return event

    policy = RetryPolicy(max_attempts=3, base_delay=0.1, jitter=0)
    result = await run_marbles(map_async(flaky, retry=policy, limiter=limiter), "a|")

    assert attempts_at == [0.0, 0.1, 60.0]
    assert result.events[0].outcome == "ok"
    assert result.events[0].trace[-1].attempt == 3
    assert limiter.statistics().requests == 3


async def test_usage_above_the_estimate_is_debt_that_delays_later_calls() -> None:
    limiter = RateLimiter(tokens_per_min=1000)
    started: dict[str, float] = {}

    async def generate(event: Event) -> Event:
        started[event.id] = now()
        await asyncio.sleep(1)
        used = 900 if event.id == "a" else 100
        own = StepRecord(step="generate", started_at=0, duration_s=0, tokens_out=used)
        return event.traced(own)

    op = map_async(generate, limiter=limiter, tokens=lambda e: 200)
    await run_marbles(op, "a-b|")

    # b's 200 fit beside a's estimate, but not beside the 900 a really used,
    # which count from when a's call ended (1 s): a window from then holds them.
    assert started == {"a": 0.0, "b": 61.0}
    assert limiter.statistics().tokens == 1000


async def test_usage_below_the_estimate_is_refunded_and_wakes_a_waiter() -> None:
    limiter = RateLimiter(tokens_per_min=1000)
    started: dict[str, float] = {}

    async def generate(event: Event) -> Event:
        started[event.id] = now()
        await asyncio.sleep(1)
        own = StepRecord(step="generate", started_at=0, duration_s=0, tokens_in=50, tokens_out=50)
        return event.traced(own)

    op = map_async(generate, concurrency=2, limiter=limiter, tokens=lambda e: 800)
    await run_marbles(op, "(ab)|")

    assert started == {"a": 0.0, "b": 1.0}


# -- the limiter itself --------------------------------------------------------


async def test_a_settled_call_counts_from_when_it_ended_so_a_late_arrival_stays_inside() -> None:
    # The endpoint counts a call when it arrives, somewhere between its admission
    # and its end; counting a settled call from its end covers any arrival.
    limiter = RateLimiter(requests_per_s=2, guard=0.0)
    first = await limiter.acquire()
    await limiter.acquire()  # never settled: counts from its admission
    await asyncio.sleep(0.5)
    first.settle(0)  # the call ended at 0.5 s; it may have arrived just then
    admitted = []
    for _ in range(2):
        await limiter.acquire()
        admitted.append(now())
    assert admitted == [1.0, 1.5]


async def test_a_held_call_stays_counted_until_it_ends_however_long_it_takes() -> None:
    limiter = RateLimiter(requests_per_s=1, guard=0.0)
    slow = await limiter.acquire(hold=True)
    behind = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(5)  # five windows pass while the call is in flight
    assert not behind.done()
    slow.settle(0)  # it ended now, and may have reached the endpoint just now
    await behind
    assert now() == 6.0


async def test_waiters_are_admitted_in_arrival_order_so_big_requests_are_not_starved() -> None:
    limiter = RateLimiter(tokens_per_min=1000)
    admitted: list[tuple[str, float]] = []

    async def take(label: str, tokens: int) -> None:
        await limiter.acquire(tokens)
        admitted.append((label, now()))

    await asyncio.gather(take("a", 600), take("big", 600), take("small", 100))

    assert admitted == [("a", 0.0), ("big", 60.0), ("small", 60.0)]


async def test_a_cancelled_waiter_does_not_block_the_ones_behind_it() -> None:
    limiter = RateLimiter(requests_per_s=1)
    await limiter.acquire()
    blocked = asyncio.create_task(limiter.acquire())
    behind = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.5)
    blocked.cancel()
    await behind

    assert now() == 1.0
    assert limiter.statistics().waiting == 0


async def test_on_wait_reports_each_wait_in_loop_seconds() -> None:
    waits: list[float] = []
    limiter = RateLimiter(requests_per_s=1, on_wait=waits.append)

    for _ in range(3):
        await limiter.acquire()

    assert waits == [1.0, 1.0]
    stats = limiter.statistics()
    assert stats.waited_seconds == pytest.approx(2.0)
    assert (stats.requests, stats.waits, stats.requests_in_window) == (3, 2, 3)


async def test_a_request_larger_than_the_whole_budget_goes_alone_once_the_window_is_empty() -> None:
    limiter = RateLimiter(tokens_per_min=100)
    await limiter.acquire(60)
    await limiter.acquire(250)

    assert now() == 60.0
    assert limiter.statistics().tokens_in_window == 250


async def test_waits_reach_the_instrumentation_hook_with_the_stage_and_limiter() -> None:
    reported: list[tuple[str, str, float]] = []
    instrumentation.rate_limit_wait = lambda *fact: reported.append(fact)
    token = current_stage.set("generate")
    try:
        await run_marbles(rate_limit(requests_per_s=1, name="llm"), "(abc)|")
    finally:
        current_stage.reset(token)
        instrumentation.rate_limit_wait = None

    assert reported == [("generate", "llm", 1.0), ("generate", "llm", 1.0)]
