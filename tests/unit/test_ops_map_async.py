"""map_async in virtual time: concurrency, ordering, timeouts, retries, failures, traces."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from streamflow.errors import ConfigError, RateLimited, TopologyError, Unavailable
from streamflow.events import Event, StepRecord
from streamflow.ops import MapStatistics, RetryPolicy, StepFn, map_async, pipe
from streamflow.testing.marbles import events_from_marbles, parse_marbles, run_marbles

pytestmark = pytest.mark.looptime


def now() -> float:
    return asyncio.get_running_loop().time()


def sleeping(delays: dict[str, float]) -> StepFn:
    """A step that sleeps ``delays[event.id]`` seconds and tags the payload."""

    async def step(event: Event) -> Event:
        await asyncio.sleep(delays.get(event.id, 1.0))
        return event.with_payload(f"{event.payload}!")

    return step


# -- the marble helper itself --------------------------------------------------


async def test_marble_docstring_example_times_are_exact() -> None:
    async def slow(event: Event) -> Event:
        await asyncio.sleep(2)
        return event

    result = await run_marbles(map_async(slow, concurrency=2), "-a-b|")

    assert result.marbles == "---a-(b|)"
    assert result.pairs == [(3.0, "a"), (5.0, "b")]
    assert result.completed_at == 5.0


def test_parse_marbles_group_is_one_tick_wide() -> None:
    assert parse_marbles("-a-(bc)-d|") == [(1, "a"), (3, "b"), (3, "c"), (5, "d"), (6, "|")]
    assert parse_marbles(" a - b ") == [(0, "a"), (2, "b")]


@pytest.mark.parametrize("bad", ["a|b", "-(ab", "a,b", "a#|"])
def test_parse_marbles_rejects_malformed_diagrams(bad: str) -> None:
    with pytest.raises(ValueError, match="marbles"):
        parse_marbles(bad)


async def test_events_from_marbles_uses_values_and_tick() -> None:
    seen: list[tuple[float, str, object]] = []
    done = asyncio.get_running_loop().create_future()
    start = now()
    source = events_from_marbles(
        "a-b|", tick=0.5, values={"a": {"text": "hi"}, "b": Event(id="b1", key="k")}
    )
    source.subscribe(
        lambda e: seen.append((now() - start, e.id, e.payload)),
        on_completed=lambda: done.set_result(now() - start),
    )
    assert await done == 1.5
    assert seen == [(0.0, "a", {"text": "hi"}), (1.0, "b1", None)]


async def test_run_marbles_reports_a_stuck_operator_with_what_came_out() -> None:
    async def never(event: Event) -> Event:
        await asyncio.Event().wait()
        return event

    with pytest.raises(TimeoutError, match="did not complete within 50s"):
        await run_marbles(map_async(never), "a|", timeout=50)


# -- concurrency and ordering --------------------------------------------------


async def test_concurrency_bound_is_reached_and_never_exceeded() -> None:
    running = 0
    peak = 0

    async def step(event: Event) -> Event:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1)
        running -= 1
        return event

    op = map_async(step, concurrency=3)
    result = await run_marbles(op, "(abcdefghij)|")

    assert peak == 3
    assert sorted(result.ids) == list("abcdefghij")
    # 10 one-second calls, 3 at a time: four waves.
    assert result.completed_at == 4.0
    stats = op.statistics()
    assert isinstance(stats, MapStatistics)
    assert stats.peak_running == 3
    assert stats.running == 0


async def test_unordered_emits_in_completion_order() -> None:
    op = map_async(sleeping({"a": 3, "b": 1, "c": 2}), concurrency=3)
    result = await run_marbles(op, "(abc)|")

    assert result.pairs == [(1.0, "b"), (2.0, "c"), (3.0, "a")]
    assert [e.payload for e in result.events] == ["b!", "c!", "a!"]


async def test_ordered_true_holds_fast_events_behind_a_slow_head() -> None:
    op = map_async(sleeping({"a": 3, "b": 1, "c": 2}), concurrency=3, ordered=True)
    result = await run_marbles(op, "(abc)|")

    assert result.pairs == [(3.0, "a"), (3.0, "b"), (3.0, "c")]
    assert result.marbles == "---(abc|)"


async def test_ordered_key_runs_one_call_per_key_and_overlaps_keys() -> None:
    started: dict[str, float] = {}
    in_flight: dict[str, int] = {}
    per_key_peak: dict[str, int] = {}

    async def step(event: Event) -> Event:
        key = event.key or ""
        started[event.id] = now()
        in_flight[key] = in_flight.get(key, 0) + 1
        per_key_peak[key] = max(per_key_peak.get(key, 0), in_flight[key])
        await asyncio.sleep({"a": 2, "b": 1, "x": 3.5, "c": 1}[event.id])
        in_flight[key] -= 1
        return event

    values = {
        "a": Event(id="a", key="k1"),
        "b": Event(id="b", key="k1"),
        "x": Event(id="x", key="k2"),
        "c": Event(id="c", key="k1"),
    }
    op = map_async(step, concurrency=4, ordered="key")
    result = await run_marbles(op, "(abxc)|", values=values)

    assert per_key_peak == {"k1": 1, "k2": 1}
    # k2's call overlaps k1's calls; k1's calls run back to back, in input order.
    assert started == {"a": 0.0, "x": 0.0, "b": 2.0, "c": 3.0}
    k1 = [e.id for e in result.events if e.key == "k1"]
    assert k1 == ["a", "b", "c"]
    assert result.pairs == [(2.0, "a"), (3.0, "b"), (3.5, "x"), (4.0, "c")]


# -- timeouts and retries ------------------------------------------------------


async def test_timeout_cancels_the_call_and_fails_with_step_timeout_after_retries() -> None:
    cancelled: list[float] = []

    async def hangs(event: Event) -> Event:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(now())
            raise
        return event

    policy = RetryPolicy(max_attempts=2, base_delay=0.5, jitter=0)
    op = map_async(hangs, timeout=1.0, retry=policy, name="generate")
    result = await run_marbles(op, "a|")

    assert cancelled == [1.0, 2.5]
    (event,) = result.events
    assert event.outcome == "failed"
    assert event.error is not None
    assert event.error.type == "StepTimeout"
    assert event.error.step == "generate"
    assert "longer than 1s" in event.error.message
    assert event.attempts == 2
    assert result.pairs == [(2.5, "a")]


async def test_retry_gaps_follow_exponential_backoff_capped_at_max_delay() -> None:
    attempts_at: list[float] = []

    async def flaky(event: Event) -> Event:
        attempts_at.append(now())
        if len(attempts_at) < 5:
            raise Unavailable("model warming up")
        return event

    policy = RetryPolicy(max_attempts=5, base_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0)
    result = await run_marbles(map_async(flaky, retry=policy), "a|")

    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert gaps == [1.0, 2.0, 4.0, 5.0]
    (event,) = result.events
    assert event.outcome == "ok"
    assert event.attempts == 5
    assert event.trace[-1].attempt == 5


async def test_retry_with_jitter_draws_delays_from_the_policy_rng() -> None:
    attempts_at: list[float] = []

    async def flaky(event: Event) -> Event:
        attempts_at.append(now())
        if len(attempts_at) < 4:
            raise TimeoutError("upstream read timed out")
        return event

    policy = RetryPolicy(max_attempts=4, base_delay=2.0, jitter=1.0, rng=random.Random(7))
    await run_marbles(map_async(flaky, retry=policy), "a|")

    twin = random.Random(7)
    expected = [2.0 * twin.random(), 4.0 * twin.random(), 8.0 * twin.random()]
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert gaps == pytest.approx(expected, abs=1e-5)
    assert all(0 <= g <= cap for g, cap in zip(gaps, [2.0, 4.0, 8.0], strict=True))


async def test_rate_limited_retry_after_is_a_floor_on_the_next_attempt() -> None:
    attempts_at: list[float] = []

    async def limited(event: Event) -> Event:
        attempts_at.append(now())
        if len(attempts_at) == 1:
            raise RateLimited("429 Too Many Requests", retry_after=7)
        return event

    policy = RetryPolicy(max_attempts=3, base_delay=0.1, jitter=0)
    result = await run_marbles(map_async(limited, retry=policy), "a|")

    assert attempts_at[1] - attempts_at[0] >= 7
    assert attempts_at == [0.0, 7.0]
    assert result.events[0].outcome == "ok"


async def test_after_the_last_attempt_the_event_carries_error_step_and_attempts() -> None:
    calls = 0

    async def down(event: Event) -> Event:
        nonlocal calls
        calls += 1
        raise Unavailable("model endpoint down")

    policy = RetryPolicy(max_attempts=3, base_delay=0.5, jitter=0)
    result = await run_marbles(map_async(down, retry=policy, name="classify"), "a|")

    (event,) = result.events
    assert calls == 3
    assert event.outcome == "failed"
    assert event.error is not None
    assert (event.error.type, event.error.message, event.error.step) == (
        "Unavailable",
        "model endpoint down",
        "classify",
    )
    assert event.error.retriable is True
    assert event.reason == "model endpoint down"
    assert event.attempts == 3
    assert [(r.step, r.attempt, r.outcome) for r in event.trace] == [("classify", 3, "failed")]


async def test_non_retriable_error_is_not_retried() -> None:
    calls = 0

    async def broken(event: Event) -> Event:
        nonlocal calls
        calls += 1
        raise ValueError("bad prompt template")

    result = await run_marbles(map_async(broken, retry=RetryPolicy(max_attempts=5)), "a|")

    assert calls == 1
    assert result.events[0].error is not None
    assert result.events[0].error.type == "ValueError"
    assert result.events[0].attempts == 1


async def test_one_failing_event_never_ends_the_stream() -> None:
    async def picky(event: Event) -> Event:
        await asyncio.sleep(1)
        if event.id == "b":
            raise KeyError("b")
        return event

    result = await run_marbles(map_async(picky, concurrency=2), "a-b-c|")

    assert result.ids == ["a", "b", "c"]
    assert [e.outcome for e in result.events] == ["ok", "failed", "ok"]
    assert result.error is None
    assert result.completed_at == 5.0


async def test_inactive_events_pass_through_without_a_call() -> None:
    called: list[str] = []

    async def step(event: Event) -> Event:
        called.append(event.id)
        await asyncio.sleep(1)
        return event

    values = {"f": Event(id="f", outcome="filtered"), "r": Event(id="r", outcome="review")}
    result = await run_marbles(map_async(step), "a(fr)|", values=values)

    assert called == ["a"]
    assert result.pairs == [(1.0, "f"), (1.0, "r"), (1.0, "a")]
    assert [e.trace for e in result.events[:2]] == [[], []]


# -- traces and contract -------------------------------------------------------


async def test_trace_record_has_step_attempt_and_loop_clock_duration() -> None:
    tries = 0

    async def summarise(event: Event) -> Event:
        nonlocal tries
        tries += 1
        await asyncio.sleep(2)
        if tries == 1:
            raise Unavailable("503")
        return event

    policy = RetryPolicy(max_attempts=2, base_delay=1.0, jitter=0)
    result = await run_marbles(map_async(summarise, retry=policy), "a|")

    (record,) = result.events[0].trace
    assert record.step == "summarise"
    assert record.attempt == 2
    assert record.outcome == "ok"
    assert record.duration_s == pytest.approx(2.0)
    assert result.events[0].attempts == 2


async def test_step_own_record_is_completed_not_duplicated() -> None:
    async def generate(event: Event) -> Event:
        await asyncio.sleep(1.5)
        own = StepRecord(
            step="generate", started_at=0, duration_s=0, model="tiny", tokens_in=12, tokens_out=3
        )
        return event.traced(own, payload="answer")

    result = await run_marbles(map_async(generate), "a|")

    (record,) = result.events[0].trace
    assert (record.model, record.tokens_in, record.tokens_out) == ("tiny", 12, 3)
    assert record.duration_s == pytest.approx(1.5)
    assert record.attempt == 1
    assert result.events[0].payload == "answer"


async def test_fn_returning_a_non_event_fails_the_event_clearly() -> None:
    async def sloppy(event: Event) -> Event:
        return {"answer": 42}  # type: ignore[return-value]

    result = await run_marbles(map_async(sloppy, retry=RetryPolicy(max_attempts=3)), "a-b|")

    assert [e.outcome for e in result.events] == ["failed", "failed"]
    error = result.events[0].error
    assert error is not None
    assert error.type == "StepFailed"
    assert "returned dict, expected an Event" in error.message
    assert result.events[0].attempts == 1
    assert result.completed_at == 3.0


def test_bad_arguments_are_config_errors() -> None:
    async def step(event: Event) -> Event:
        return event

    with pytest.raises(ConfigError, match="concurrency"):
        map_async(step, concurrency=0)
    with pytest.raises(ConfigError, match="timeout"):
        map_async(step, timeout=0)
    with pytest.raises(ConfigError, match="ordered"):
        map_async(step, ordered="sorted")  # type: ignore[arg-type]


# -- ordering validation -------------------------------------------------------


async def a(event: Event) -> Event:
    return event


async def b(event: Event) -> Event:
    return event


def test_key_ordered_step_after_an_unordered_one_is_a_topology_error() -> None:
    with pytest.raises(TopologyError) as caught:
        pipe(map_async(a), map_async(b, ordered="key"), name="support")

    message = str(caught.value)
    assert "'a'" in message
    assert "'b'" in message
    assert "ordered='key'" in message


def test_ordered_step_after_an_unordered_one_is_a_topology_error() -> None:
    with pytest.raises(TopologyError, match="'a'"):
        pipe(map_async(a, concurrency=4), map_async(b, ordered=True))


@pytest.mark.parametrize("upstream", [True, "key"])
def test_ordered_upstream_satisfies_a_key_ordered_step(upstream: bool | str) -> None:
    chain = pipe(map_async(a, ordered=upstream), map_async(b, ordered="key"))  # type: ignore[arg-type]

    assert chain.ordering == "key"
    assert [name for name, _ in chain.branches] == ["a", "b"]


async def test_disposing_the_subscription_cancels_calls_in_flight() -> None:
    cancelled: list[float] = []

    async def long_call(event: Event) -> Event:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(now())
            raise
        return event

    out: list[Event] = []
    subscription = map_async(long_call)(events_from_marbles("ab")).subscribe(out.append)
    await asyncio.sleep(5)
    subscription.dispose()
    await asyncio.sleep(0)

    assert cancelled == [5.0, 5.0]
    assert out == []


def test_retry_after_is_capped_by_the_policy() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_retry_after=20.0, jitter=0)
    assert policy.delay(1, 86400) == 20.0
    assert policy.delay(1, 7) == 7.0
    assert RetryPolicy().delay(1, 86400) <= 60.0  # a minute by default


async def test_a_retry_after_past_the_cap_fails_that_attempt_instead_of_stalling() -> None:
    attempts_at: list[float] = []

    async def limited(event: Event) -> Event:
        attempts_at.append(now())
        if len(attempts_at) < 3:
            raise RateLimited("429 Too Many Requests", retry_after=3600)
        return event

    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_retry_after=30.0, jitter=0)
    result = await run_marbles(map_async(limited, retry=policy), "a|")

    assert attempts_at == [0.0, 30.0, 60.0]
    assert result.events[0].outcome == "ok"
