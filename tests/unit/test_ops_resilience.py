"""Fallback, circuit breaker and adaptive concurrency in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from reactivex.subject import Subject

from streamflow.errors import CircuitOpen, ConfigError, RateLimited, RetriableError, Unavailable
from streamflow.events import Event, StepRecord
from streamflow.flow._adaptive import AdaptiveConcurrency
from streamflow.ops import RetryPolicy, map_async
from streamflow.ops._resilience import CircuitBreaker, circuit_breaker, fallback
from streamflow.testing.marbles import run_marbles

pytestmark = pytest.mark.looptime

Step = Callable[[Event], Awaitable[Event]]


def now() -> float:
    return asyncio.get_running_loop().time()


def backend(model: str, *, fails: int = 0, error: type[Exception] = Unavailable) -> Step:
    """A model backend that fails its first ``fails`` calls, then answers with its name."""
    calls = 0

    async def answer(event: Event) -> Event:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1)
        if calls <= fails:
            raise error(f"{model} is down")
        return event.with_payload(f"answer from {model}")

    answer.__name__ = model
    return answer


# -- fallback ------------------------------------------------------------------


async def test_fallback_answers_when_the_primary_fails_and_the_trace_names_it() -> None:
    step = fallback(backend("gpt", fails=99), backend("local-extractive"), name="generate")
    result = await run_marbles(map_async(step, name="generate"), "a|")

    (event,) = result.events
    assert event.outcome == "ok"
    assert event.payload == "answer from local-extractive"
    (record,) = event.trace
    assert record.step == "generate"
    assert record.model == "local-extractive"
    assert record.detail == "fell back to local-extractive after gpt: Unavailable"
    assert record.duration_s == pytest.approx(2.0)


async def test_a_healthy_primary_answers_and_keeps_its_own_record() -> None:
    async def gpt(event: Event) -> Event:
        own = StepRecord(step="gpt", started_at=0, duration_s=0, model="gpt-4o-mini", tokens_in=9)
        return event.traced(own, payload="fine")

    result = await run_marbles(map_async(fallback(gpt, backend("local"))), "a|")

    (record,) = result.events[0].trace
    assert (record.step, record.model, record.tokens_in, record.detail) == (
        "gpt",
        "gpt-4o-mini",
        9,
        None,
    )


async def test_the_primary_is_retried_before_falling_back() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.5, jitter=0)
    step = fallback(("primary", backend("gpt", fails=2)), ("spare", backend("local")), retry=policy)
    result = await run_marbles(map_async(step), "a|")

    assert result.events[0].payload == "answer from gpt"
    assert result.events[0].trace[0].model == "primary"
    # Two failed calls (1 s each) with 0.5 s and 1 s of backoff, then the answer.
    assert result.pairs == [(4.5, "a")]


async def test_errors_that_when_rejects_do_not_fall_back() -> None:
    spare_calls: list[str] = []

    async def spare(event: Event) -> Event:
        spare_calls.append(event.id)
        return event

    step = fallback(
        backend("gpt", fails=1, error=ValueError),
        spare,
        when=lambda exc: isinstance(exc, RetriableError),
    )
    result = await run_marbles(map_async(step, name="generate"), "a|")

    assert spare_calls == []
    error = result.events[0].error
    assert error is not None
    assert (error.type, error.step) == ("ValueError", "generate")


async def test_when_every_backend_fails_the_event_carries_the_last_error() -> None:
    step = fallback(backend("gpt", fails=9), backend("local", fails=9, error=TimeoutError))
    result = await run_marbles(map_async(step), "a|")

    (event,) = result.events
    assert event.outcome == "failed"
    assert event.error is not None
    assert event.error.type == "TimeoutError"


def test_fallback_needs_a_second_backend() -> None:
    with pytest.raises(ConfigError, match="at least one backend"):
        fallback(backend("gpt"))


# -- circuit breaker -----------------------------------------------------------


async def fail(event: Event) -> Event:
    await asyncio.sleep(1)
    raise Unavailable("503 from the model server")


async def succeed(event: Event) -> Event:
    await asyncio.sleep(1)
    return event


async def outcome(breaker: CircuitBreaker, fn: Step) -> str:
    try:
        await breaker.call(fn, Event(id="x"))
    except CircuitOpen:
        return "rejected"
    except Unavailable:
        return "failed"
    return "ok"


async def test_breaker_opens_after_consecutive_failures_and_fails_fast() -> None:
    calls: list[float] = []

    async def counted(event: Event) -> Event:
        calls.append(now())
        return await fail(event)

    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30, name="vllm")
    results = [await outcome(breaker, counted) for _ in range(3)]
    assert results == ["failed"] * 3
    assert breaker.state == "open"

    await asyncio.sleep(10)
    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(counted, Event(id="y"))

    assert len(calls) == 3
    assert caught.value.retriable is True
    # Opened at t=3 by the third failure; 10 s later, 20 s remain.
    assert caught.value.retry_after == pytest.approx(20.0)
    assert "vllm" in str(caught.value)
    assert now() == 13.0
    stats = breaker.statistics()
    assert (stats.state, stats.opened, stats.rejected, stats.failures) == ("open", 1, 1, 3)


async def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    for fn in (fail, fail, succeed, fail, fail):
        await outcome(breaker, fn)

    assert breaker.state == "closed"
    assert breaker.statistics().consecutive_failures == 2


async def test_errors_that_do_not_count_leave_the_breaker_closed() -> None:
    async def bad_request(event: Event) -> Event:
        raise ValueError("400: prompt too long")

    breaker = CircuitBreaker(failure_threshold=2)
    for _ in range(5):
        with pytest.raises(ValueError):
            await breaker.call(bad_request, Event(id="x"))

    assert breaker.state == "closed"
    assert breaker.statistics().opened == 0


async def test_half_open_lets_one_probe_through_and_closes_on_its_success() -> None:
    transitions: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        failure_threshold=1,
        reset_timeout=30,
        on_state_change=lambda old, new: transitions.append((old, new)),
    )
    await outcome(breaker, fail)
    await asyncio.sleep(29)
    assert breaker.state == "open"
    await asyncio.sleep(1)
    assert breaker.statistics().state == "half_open"

    probe = asyncio.create_task(outcome(breaker, succeed))
    await asyncio.sleep(0.5)
    second = await outcome(breaker, succeed)
    assert second == "rejected"
    assert await probe == "ok"

    assert breaker.statistics().state == "closed"
    assert await outcome(breaker, succeed) == "ok"
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_a_failed_probe_opens_the_circuit_again_for_a_full_timeout() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30)
    await outcome(breaker, fail)
    await asyncio.sleep(30)
    assert await outcome(breaker, fail) == "failed"

    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as caught:
        await breaker.call(succeed, Event(id="x"))
    assert caught.value.retry_after == pytest.approx(30.0)
    assert breaker.statistics().opened == 2


async def test_a_cancelled_probe_frees_the_probe_slot() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5)
    await outcome(breaker, fail)
    await asyncio.sleep(5)

    probe = asyncio.create_task(outcome(breaker, succeed))
    await asyncio.sleep(0.5)
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)

    assert breaker.state == "half_open"
    assert await outcome(breaker, succeed) == "ok"
    assert breaker.statistics().state == "closed"


async def test_retries_wait_for_the_probe_instead_of_hammering_an_open_circuit() -> None:
    calls: list[float] = []

    async def endpoint(event: Event) -> Event:
        calls.append(now())
        await asyncio.sleep(1)
        if now() < 20:
            raise Unavailable("model server restarting")
        return event.with_payload("answer")

    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10, name="generate")
    policy = RetryPolicy(max_attempts=20, base_delay=0.1, max_delay=0.1, jitter=0)
    op = map_async(circuit_breaker(breaker)(endpoint), retry=policy)
    result = await run_marbles(op, "a|")

    (event,) = result.events
    assert event.outcome == "ok"
    # Two failures open it at t=2.1; the next attempt is refused and waits out the
    # 9.9 s left, so the probe goes at 12.1 (fails, reopens) and again at 23.1 (answers).
    assert calls == pytest.approx([0.0, 1.1, 12.1, 23.1])
    assert result.pairs[0][0] == pytest.approx(24.1)
    assert event.attempts == 6
    assert breaker.statistics().opened == 2


def test_breaker_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ConfigError, match="reset_timeout"):
        CircuitBreaker(reset_timeout=0)
    with pytest.raises(ConfigError, match="half_open_max"):
        CircuitBreaker(half_open_max=0)


# -- adaptive concurrency ------------------------------------------------------


async def drive(op: object, n: int) -> list[Event]:
    loop = asyncio.get_running_loop()
    source: Subject[Event] = Subject()
    out: list[Event] = []
    done: asyncio.Future[None] = loop.create_future()
    op(source).subscribe(  # type: ignore[operator]
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    for i in range(n):
        source.on_next(Event(id=str(i)))
    source.on_completed()
    await asyncio.wait_for(done, timeout=100_000)
    return out


async def test_limit_converges_near_an_endpoint_capacity_and_429s_become_rare() -> None:
    capacity = 20
    in_flight = 0
    log: list[tuple[float, bool, int]] = []  # (time, refused, limit when called)
    adaptive = AdaptiveConcurrency(initial=2, max=256)

    async def endpoint(event: Event) -> Event:
        nonlocal in_flight
        if in_flight >= capacity:
            log.append((now(), True, adaptive.limit))
            await asyncio.sleep(0.05)
            raise RateLimited("429 Too Many Requests", retry_after=0.5)
        log.append((now(), False, adaptive.limit))
        in_flight += 1
        try:
            await asyncio.sleep(1)
        finally:
            in_flight -= 1
        return event

    policy = RetryPolicy(max_attempts=50, base_delay=0.1, jitter=0)
    op = map_async(endpoint, concurrency=adaptive, retry=policy)
    out = await drive(op, 3000)

    assert len(out) == 3000
    assert all(e.outcome == "ok" for e in out)
    end = log[-1][0]
    settled = [(refused, limit) for t, refused, limit in log if t >= end / 2]
    limits = [limit for _, limit in settled]
    refusals = sum(refused for refused, _ in settled)
    assert max(limits) <= capacity + 2
    assert sum(limits) / len(limits) >= 0.6 * capacity
    assert refusals / len(settled) < 0.02
    stats = adaptive.statistics()
    assert stats.decreases >= 3
    assert stats.rate_limited >= stats.decreases
    assert stats.peak_limit <= capacity + 2


async def test_limit_backs_off_when_latency_climbs_past_the_tolerance() -> None:
    capacity = 10
    in_flight = 0
    adaptive = AdaptiveConcurrency(initial=1, max=256, latency_tolerance=2.0)
    seen_limits: list[int] = []

    async def queueing_endpoint(event: Event) -> Event:
        # Past its capacity the server queues: latency grows with the load.
        nonlocal in_flight
        in_flight += 1
        seen_limits.append(adaptive.limit)
        try:
            await asyncio.sleep(max(1.0, in_flight / capacity))
        finally:
            in_flight -= 1
        return event

    out = await drive(map_async(queueing_endpoint, concurrency=adaptive), 2000)

    assert len(out) == 2000
    stats = adaptive.statistics()
    assert stats.rate_limited == 0
    assert stats.slow >= 1
    assert stats.min_latency == pytest.approx(1.0)
    assert max(seen_limits[len(seen_limits) // 2 :]) <= 2 * capacity + 2


async def test_one_overload_costs_one_cut_not_one_per_call_in_flight() -> None:
    adaptive = AdaptiveConcurrency(initial=40, max=256)

    for _ in range(30):
        adaptive.on_failure(started=0.0, finished=1.0, error=RateLimited("429"))

    assert adaptive.limit == 20
    assert adaptive.statistics().decreases == 1
    adaptive.on_failure(started=1.0, finished=2.0, error=RateLimited("429"))
    assert adaptive.limit == 10


async def test_other_errors_leave_the_limit_alone_and_bounds_hold() -> None:
    adaptive = AdaptiveConcurrency(initial=2, min=2, max=3)
    adaptive.on_failure(0.0, 1.0, ValueError("bad prompt"))
    assert adaptive.limit == 2
    for i in range(50):
        adaptive.on_success(float(i), float(i) + 1)
    assert adaptive.limit == 3
    adaptive.on_failure(100.0, 101.0, RateLimited("429"))
    assert adaptive.limit == 2


def test_adaptive_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="min <= initial <= max"):
        AdaptiveConcurrency(initial=300, max=256)
    with pytest.raises(ConfigError, match="decrease"):
        AdaptiveConcurrency(decrease=1.0)
    with pytest.raises(ConfigError, match="latency_tolerance"):
        AdaptiveConcurrency(latency_tolerance=0.5)
