"""Retry policy: exponential backoff with full jitter, honouring retry-after hints."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from streamflow.errors import ConfigError, RetriableError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a step again.

    Attributes:
        max_attempts: attempts in total, the first one included.
        base_delay: the delay before the second attempt, in seconds.
        max_delay: the cap on any one backoff delay.
        max_retry_after: the longest ``retry_after`` hint honoured (a server's
            ``Retry-After``, an open circuit's wait), a minute by default. A longer
            hint fails that attempt (retriable) instead of stalling the event: the
            next attempt goes after ``max_retry_after``.
        multiplier: growth of the delay per attempt.
        jitter: fraction of the delay that is randomised (0 = none, 1 = full jitter).
        retry_on: exception types worth retrying; errors with ``retriable = True``
            are always retried.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 10.0
    max_retry_after: float = 60.0
    multiplier: float = 2.0
    jitter: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (RetriableError, TimeoutError, ConnectionError)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be >= 1 (1 means no retry)")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ConfigError("RetryPolicy delays must be >= 0 seconds")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("RetryPolicy.jitter must be between 0 and 1")

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
