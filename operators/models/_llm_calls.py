"""Calling a model endpoint under a shared rate limit, retrying as the endpoint asks.

Every HTTP attempt, retries included, first waits on the endpoint's limiter,
so the rate the endpoint sees never exceeds the budget however many steps
share it. A refused attempt (429, 5xx) is refunded its token estimate, since
the endpoint bills nothing for it, and the next attempt waits at least as long
as ``Retry-After`` says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from operators.models._results import ChatResult, RequestInfo, Usage
from operators.models._structured import schema_hint
from streamflow.ops import Limiter, RetryPolicy, instrumentation, retry_call

if TYPE_CHECKING:
    from operators.models.openai import ModelClient

__all__ = [
    "DEFAULT_MODEL_RETRY",
    "CallPolicy",
    "ask_json",
    "call_model",
    "estimate_tokens",
    "report_request",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_MODEL_RETRY = RetryPolicy(max_attempts=6, base_delay=0.2, max_delay=20.0)
"""Retries of one model call: 429s and 5xx are common and short-lived."""


def estimate_tokens(text: str) -> int:
    """A cautious token count for budgeting: about one token per three characters."""
    return len(text) // 3 + 1


@dataclass(frozen=True)
class CallPolicy:
    """How a backend calls its endpoint: the shared limiter, retries, and token counting.

    Attributes:
        limiter: the endpoint's limiter (a :func:`streamflow.ops.shared_limiter`), or None.
        retry: retries of each call; each attempt waits on the limiter again.
        count_tokens: counts the tokens of a text for the limiter's estimate; give
            the model's tokenizer to make the estimate an upper bound.
        timeout: seconds per read of each call (None: the endpoint's default).
    """

    limiter: Limiter | None = None
    retry: RetryPolicy | None = field(default=DEFAULT_MODEL_RETRY)
    count_tokens: Callable[[str], int] = estimate_tokens
    timeout: float | None = None

    def estimate(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None) -> int:
        """The token charge of a chat call: its messages plus the most it may answer."""
        prompt = sum(self.count_tokens(str(m.get("content") or "")) for m in messages)
        return prompt + (max_tokens or 0)


async def call_model(
    call: Callable[[], Awaitable[T]],
    usage: Callable[[T], Usage | None],
    *,
    policy: CallPolicy,
    estimate: int = 0,
) -> T:
    """Run one model call under ``policy``: limiter before each attempt, retries after.

    Args:
        call: makes one HTTP attempt (a ModelClient call with no retry of its own).
        usage: reads the usage of a result, to settle the limiter's charge.
        policy: the limiter, retry policy and timeout.
        estimate: tokens to charge before the call (in + out).

    Returns:
        The call's result.

    Raises:
        Exception: the last attempt's error, once retries are spent or it is not retriable.
    """
    limiter = policy.limiter

    async def attempt() -> T:
        # Held until settled below: the call counts until it ends, however late it arrives.
        permit = await limiter.acquire(estimate, hold=True) if limiter is not None else None
        try:
            result = await call()
        except BaseException:
            if permit is not None:
                permit.settle(0)
            raise
        if permit is not None:
            used = usage(result)
            permit.settle(used.tokens_in + used.tokens_out if used is not None else estimate)
        return result

    return (await retry_call(attempt, policy.retry)).unwrap()


def report_request(info: RequestInfo) -> None:
    """A ModelClient ``on_request`` hook that counts requests in the running pipeline's metrics.

    Pass it as ``ModelClient(on_request=report_request)``: every HTTP attempt
    then reaches ``streamflow_model_requests_total{stage, model, status}``.
    """
    instrumentation.report_model_request(info.model, info.status)


async def ask_json(
    client: ModelClient,
    model: str,
    *,
    system: str,
    user: str,
    answer_model: type[M],
    policy: CallPolicy,
    temperature: float | None,
    max_tokens: int | None,
) -> tuple[M, Usage]:
    """Ask ``model`` for one JSON object shaped as ``answer_model``, under ``policy``.

    The client's structured output does the asking and the validating; this adds
    the shared limiter and retries around it.

    Returns:
        The validated answer and the call's usage.

    Raises:
        ModelOutputInvalid: the answer is not a valid ``answer_model``.
        RateLimited, Unavailable, StepTimeout: retries were spent.
    """
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    hint = schema_hint(answer_model)  # the client sends it too: count it in the estimate

    async def ask() -> ChatResult[M]:
        return await client.chat(
            messages,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            response_model=answer_model,
            timeout=policy.timeout,
        )

    result = await call_model(
        ask,
        lambda r: r.usage,
        policy=policy,
        estimate=policy.estimate(messages, max_tokens) + policy.count_tokens(hint),
    )
    assert result.parsed is not None  # response_model guarantees it or raises
    return result.parsed, result.usage
