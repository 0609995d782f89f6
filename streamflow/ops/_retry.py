"""Retries: the policy (when, and how long to wait) and the one loop that applies it.

Every retrying call in streamflow and in ``operators`` goes through
:func:`retry_call`: steps (``map_async``), batches (``batch_async``),
fallback backends and model HTTP calls. What is retried is the policy's to
say, and :class:`RetryPolicy` says it in one place.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamflow.errors import ConfigError, RetriableError

__all__ = ["DEFAULT_RETRY_ON", "RetryOutcome", "RetryPolicy", "retry_call"]

T = TypeVar("T")

DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (RetriableError, TimeoutError, ConnectionError)
"""What :class:`RetryPolicy` retries unless told otherwise: streamflow's transient errors
(:class:`~streamflow.errors.RetriableError`: step timeouts, HTTP 429 and 5xx, an open
circuit), and Python's ``TimeoutError`` and ``ConnectionError``. Any other exception (a
plain ``RuntimeError``, ``ValueError``, a ``StepFailed``) fails the step at once."""


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a step again.

    An error is retried, while attempts remain, when it is an instance of one
    of ``retry_on`` or says ``retriable = True`` itself (streamflow's transient
    errors do). The default ``retry_on`` is :data:`DEFAULT_RETRY_ON`:
    ``RetriableError``, ``TimeoutError`` and ``ConnectionError``, so a plain
    ``RuntimeError`` is *not* retried unless you name it::

        RetryPolicy(max_attempts=3, retry_on=(RuntimeError, httpx.TransportError))

    Naming types replaces the default set (errors that say ``retriable`` are
    still retried). The wait before attempt ``n + 1`` is
    ``min(max_delay, base_delay * multiplier ** (n - 1))``, randomised by
    ``jitter``; a ``retry_after`` hint on the error (HTTP Retry-After) is a floor.

    Attributes:
        max_attempts: attempts in total, the first one included (1: no retry).
        base_delay: the delay before the second attempt, in seconds.
        max_delay: the cap on any one backoff delay.
        max_retry_after: the longest ``retry_after`` hint honoured (a server's
            ``Retry-After``, an open circuit's wait), a minute by default. A longer
            hint fails that attempt (retriable) instead of stalling the event: the
            next attempt goes after ``max_retry_after``.
        multiplier: growth of the delay per attempt.
        jitter: fraction of the delay that is randomised (0 = none, 1 = full jitter).
        retry_on: exception types worth retrying (a type or a tuple of types).

    Raises:
        ConfigError: a bound out of range, or ``retry_on`` that is not exception types.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 10.0
    max_retry_after: float = 60.0
    multiplier: float = 2.0
    jitter: float = 1.0
    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be >= 1 (1 means no retry)")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ConfigError("RetryPolicy delays must be >= 0 seconds")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("RetryPolicy.jitter must be between 0 and 1")
        retry_on: object = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on
        ):
            raise ConfigError(
                f"RetryPolicy.retry_on must be exception types, got {self.retry_on!r}; "
                "write for example retry_on=(RuntimeError, TimeoutError)"
            )
        object.__setattr__(self, "retry_on", retry_on)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when ``error`` after ``attempt`` attempts deserves another try."""
        if attempt >= self.max_attempts:
            return False
        return bool(getattr(error, "retriable", False)) or isinstance(error, self.retry_on)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based).

        A ``retry_after`` hint from the other side is a floor: we never come
        back sooner than asked, even when backoff would say so, up to
        ``max_retry_after``. A longer hint (``Retry-After: 3600``) is capped
        there: the next attempt goes after the cap and, refused again, counts as
        one more failed attempt, so an event never waits an hour on one header.
        """
        backoff = min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))
        wait = backoff * (1 - self.jitter) + backoff * self.jitter * self.rng.random()
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


@dataclass(frozen=True, slots=True)
class RetryOutcome(Generic[T]):
    """What :func:`retry_call` ended with: the value, or the last error, and the attempts.

    Attributes:
        value: the successful attempt's result (None when every attempt failed).
        error: the last attempt's error (None on success).
        attempts: attempts made, the first one included.
    """

    value: T | None
    error: Exception | None
    attempts: int

    def unwrap(self) -> T:
        """Return the value, or raise the last attempt's error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


async def retry_call(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy | None,
    *,
    retry_if: Callable[[Exception], bool] | None = None,
    on_failure: Callable[[Exception, int], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RetryOutcome[T]:
    """Await ``call()`` until it succeeds or ``policy`` gives up; never raises for a failure.

    Args:
        call: makes one attempt (it may do its own set-up per attempt, such as
            waiting for a rate limiter).
        policy: when and how long to wait; None tries once.
        retry_if: a further condition an error must meet to be retried (for
            example: nothing was streamed yet).
        on_failure: called with each failed attempt's error and number, before
            the policy decides (to settle a limiter charge, feed adaptive concurrency).
        sleep: waits between attempts (a test can count the delays).

    Returns:
        The outcome: the value and the attempts it took, or the last error.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            value = await call()
        except Exception as exc:
            if on_failure is not None:
                on_failure(exc, attempt)
            if (
                policy is None
                or not policy.should_retry(exc, attempt)
                or (retry_if is not None and not retry_if(exc))
            ):
                return RetryOutcome(None, exc, attempt)
            await sleep(policy.delay(attempt, getattr(exc, "retry_after", None)))
            continue
        return RetryOutcome(value, None, attempt)
