"""Calling a model endpoint under a shared rate limit, retrying as the endpoint asks.

Every HTTP attempt, retries included, first waits on the endpoint's limiter,
so the rate the endpoint sees never exceeds the budget however many steps
share it. A refused attempt (429, 5xx) is refunded its token estimate, since
the endpoint bills nothing for it, and the next attempt waits at least as long
as ``Retry-After`` says.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from operators.models._results import ModelOutputInvalid, RequestInfo, Usage
from streamflow.events import dumps
from streamflow.ops import RateLimiter, RetryPolicy, instrumentation

__all__ = [
    "DEFAULT_MODEL_RETRY",
    "CallPolicy",
    "call_model",
    "estimate_tokens",
    "json_messages",
    "parse_json_answer",
    "report_request",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_MODEL_RETRY = RetryPolicy(max_attempts=6, base_delay=0.2, max_delay=20.0)
"""Retries of one model call: 429s and 5xx are common and short-lived."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


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

    limiter: RateLimiter | None = None
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
    limiter, retry = policy.limiter, policy.retry
    attempt = 0
    while True:
        attempt += 1
        permit = await limiter.acquire(estimate) if limiter is not None else None
        try:
            result = await call()
        except BaseException as exc:
            if permit is not None:
                permit.settle(0)
            if (
                isinstance(exc, Exception)
                and retry is not None
                and retry.should_retry(exc, attempt)
            ):
                await asyncio.sleep(retry.delay(attempt, getattr(exc, "retry_after", None)))
                continue
            raise
        if permit is not None:
            used = usage(result)
            permit.settle(used.tokens_in + used.tokens_out if used is not None else estimate)
        return result


def report_request(info: RequestInfo) -> None:
    """A ModelClient ``on_request`` hook that counts requests in the running pipeline's metrics.

    Pass it as ``ModelClient(on_request=report_request)``: every HTTP attempt
    then reaches ``streamflow_model_requests_total{stage, model, status}``.
    """
    instrumentation.report_model_request(info.model, info.status)


def json_messages(system: str, user: str, answer_model: type[BaseModel]) -> list[dict[str, Any]]:
    """Chat messages asking for one JSON object shaped as ``answer_model``."""
    schema = dumps(answer_model.model_json_schema()).decode()
    return [
        {
            "role": "system",
            "content": f"{system}\nAnswer with one JSON object only, matching this JSON "
            f"schema: {schema}",
        },
        {"role": "user", "content": user},
    ]


def parse_json_answer(content: str, answer_model: type[M], model: str) -> M:
    """Validate a model's JSON answer (a Markdown fence around it is tolerated).

    Raises:
        ModelOutputInvalid: the answer is not a valid ``answer_model``.
    """
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    try:
        return answer_model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(root)"
        snippet = " ".join(content.split())[:120]
        raise ModelOutputInvalid(
            f"model {model!r} did not answer with a valid {answer_model.__name__}: "
            f"{where}: {first['msg']} (answer began: {snippet!r})",
            model=model,
            content=content,
        ) from exc
