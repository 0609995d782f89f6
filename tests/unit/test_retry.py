"""Retries say what they do: named exceptions, documented defaults, one helper, honest attempts."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamflow import Event, Pipeline, RetryPolicy, Stage, map_async
from streamflow.errors import ConfigError, RateLimited, StepFailed
from streamflow.events import loads
from streamflow.ops import DEFAULT_RETRY_ON, batch_async, fallback, retry_call
from streamflow.runtime import run_flow
from streamflow.transports import (
    CollectingSink,
    IterableSource,
    JsonlSink,
    MemoryBroker,
    MemorySink,
)

pytestmark = pytest.mark.looptime


class Flaky:
    """Raises ``error`` on the first ``failures`` calls, then answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    async def __call__(self, event: Event) -> Event:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return event


async def _same(event: Event) -> Event:
    return event


def _one_step(step: Flaky, retry: RetryPolicy) -> Pipeline:
    return Pipeline("p", [Stage("model", map_async(step, retry=retry, name="model"))])


async def test_a_named_exception_is_retried_and_the_default_leaves_it_alone() -> None:
    named = Flaky(RuntimeError("model said no"), failures=2)
    sink = CollectingSink()
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, retry_on=(RuntimeError,))
    await run_flow(_one_step(named, policy), IterableSource([b'{"id":"a"}']), sink)
    assert named.calls == 3 and sink.outcomes() == {"ok": 1}
    assert sink.events[0].trace[-1].attempt == 3

    plain = Flaky(RuntimeError("model said no"), failures=2)
    sink = CollectingSink()
    await run_flow(_one_step(plain, RetryPolicy(max_attempts=3)), IterableSource([b"{}"]), sink)
    assert plain.calls == 1 and sink.outcomes() == {"failed": 1}
    assert RuntimeError not in DEFAULT_RETRY_ON


async def test_a_single_type_is_taken_and_anything_else_fails_at_build_with_the_fix() -> None:
    assert RetryPolicy(retry_on=ValueError).retry_on == (ValueError,)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"retry_on=\(RuntimeError, TimeoutError\)"):
        RetryPolicy(retry_on=("RuntimeError",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="exception types"):
        RetryPolicy(retry_on=(int,))  # type: ignore[arg-type]


async def test_a_dead_letter_counts_the_failing_steps_attempts_not_every_step(
    tmp_path: Path,
) -> None:
    failing = Flaky(RuntimeError("still no"), failures=99)
    pipeline = Pipeline(
        "p",
        [
            Stage("first", map_async(_same, name="first")),
            Stage("second", map_async(_same, name="second")),
            Stage(
                "model",
                map_async(
                    failing,
                    name="model",
                    retry=RetryPolicy(max_attempts=3, base_delay=0.01, retry_on=(RuntimeError,)),
                ),
            ),
        ],
    )
    await run_flow(pipeline, IterableSource([b'{"id":"d"}']), JsonlSink(tmp_path / "o.jsonl"))
    [letter] = [loads(line) for line in (tmp_path / "o.dlq.jsonl").read_bytes().splitlines()]
    assert letter["stage"] == "model" and letter["attempts"] == 3
    assert failing.calls == 3

    broker = MemoryBroker()
    sink = MemorySink(broker, output_topic="o", dlq_topic="d", review_topic="r", stage="model")
    await run_flow(pipeline, IterableSource([b'{"id":"k"}']), sink)
    [message] = broker.messages("d")
    assert loads(message.value)["attempts"] == 3


async def test_batches_and_fallback_backends_retry_through_the_policy() -> None:
    calls = 0

    async def embed(batch: list[Event]) -> list[Event]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimited("slow down", retry_after=0.5)
        return batch

    sink = CollectingSink()
    pipeline = Pipeline(
        "b",
        [Stage("embed", batch_async(embed, max_size=4, max_wait=0.01, retry=RetryPolicy()))],
    )
    await run_flow(pipeline, IterableSource([b"{}"] * 4), sink)
    assert sink.outcomes() == {"ok": 4}
    assert {e.trace[-1].attempt for e in sink.events} == {2}

    primary = Flaky(ConnectionError("down"), failures=2)
    step = fallback(primary, _same, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    answered = await step(Event(id="f"))
    assert primary.calls == 2  # retried once, then the fallback answered
    assert answered.trace[-1].model == "_same"


async def test_retry_call_waits_as_the_policy_says_and_reports_each_failure() -> None:
    waits: list[float] = []
    failures: list[tuple[str, int]] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    errors = iter([RateLimited("429", retry_after=5.0), TimeoutError("slow")])

    async def call() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "answer"

    policy = RetryPolicy(max_attempts=4, base_delay=1.0, multiplier=2.0, jitter=0.0)
    tried = await retry_call(
        call, policy, sleep=sleep, on_failure=lambda e, n: failures.append((type(e).__name__, n))
    )
    assert (tried.value, tried.error, tried.attempts) == ("answer", None, 3)
    assert waits == [5.0, 2.0]  # the Retry-After floor, then backoff 1 * 2
    assert failures == [("RateLimited", 1), ("TimeoutError", 2)]


async def test_retry_call_gives_up_on_what_is_not_retried_and_keeps_the_error() -> None:
    async def broken() -> None:
        raise StepFailed("for good")

    tried = await retry_call(broken, RetryPolicy(max_attempts=5))
    assert isinstance(tried.error, StepFailed) and tried.attempts == 1
    with pytest.raises(StepFailed):
        tried.unwrap()

    async def slow() -> None:
        raise TimeoutError

    vetoed = await retry_call(slow, RetryPolicy(max_attempts=5), retry_if=lambda e: False)
    assert vetoed.attempts == 1
    once = await retry_call(slow, None)
    assert once.attempts == 1
    spent = await retry_call(slow, RetryPolicy(max_attempts=3, base_delay=0.01))
    assert spent.attempts == 3 and isinstance(spent.error, TimeoutError)
