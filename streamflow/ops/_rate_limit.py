"""The rate_limit operator: each active event waits on a limiter before it goes on.

The limiter itself (rolling windows, permits, the shared registry) lives in
:mod:`streamflow.ops._limiter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streamflow.errors import CapacityExceeded, ConfigError
from streamflow.events import Event
from streamflow.ops._adapter import per_event
from streamflow.ops._hinted import argument_of
from streamflow.ops._limiter import Limiter, RateLimiter
from streamflow.ops._limiter_registry import shared_limiter
from streamflow.ops._operator import Lane, Operator

__all__ = ["DEFAULT_CAPACITY", "TokenEstimate", "rate_limit"]

TokenEstimate = Callable[[Any], int]

DEFAULT_CAPACITY = 4096


def rate_limit(
    limiter: Limiter | None = None,
    *,
    tokens: TokenEstimate | None = None,
    requests_per_s: int | None = None,
    requests_per_min: int | None = None,
    tokens_per_min: int | None = None,
    key: str | None = None,
    name: str = "rate_limit",
    capacity: int = DEFAULT_CAPACITY,
) -> Operator:
    """Hold each active event until the limiter admits it, then let it go on.

    ::

        in:   -(abcd)-----|      (requests_per_s=2, tick=0.5 s)
        out:  -(ab)--(cd)-|

    A waiting event has not left the flow, so it keeps its credit: a
    saturated endpoint slows the source instead of growing a queue. Events
    leave in input order, one per input; inactive events pass without a
    charge (behind the ones waiting, so order holds). The charge is the
    estimate only; to settle real token usage per model call (retries
    included), give the limiter to ``map_async(..., limiter=)`` instead.

    Args:
        limiter: the limiter to draw from; or give the limits (and ``key``).
        tokens: the token estimate of an event (default 0); like a step, it
            takes the payload when its hint names the payload's type.
        requests_per_s: most calls per second (with ``key``: the shared limiter).
        requests_per_min: most calls per minute.
        tokens_per_min: most tokens per minute.
        key: the endpoint key of a :func:`shared_limiter`; without it the
            limits make a limiter private to this operator.
        name: the step name, for statistics and failures.
        capacity: bound on events waiting here (credit keeps it far lower).

    Returns:
        An Operator that keeps input order.

    Raises:
        ConfigError: both a limiter and limits given, or neither.
    """
    given = any(v is not None for v in (requests_per_s, requests_per_min, tokens_per_min))
    if limiter is not None and (given or key is not None):
        raise ConfigError(f"rate_limit '{name}': give a limiter or limits (and key), not both")
    if limiter is None:
        if key is not None:
            limiter = shared_limiter(
                key,
                requests_per_min=requests_per_min,
                requests_per_s=requests_per_s,
                tokens_per_min=tokens_per_min,
            )
        else:
            limiter = RateLimiter(
                requests_per_min=requests_per_min,
                requests_per_s=requests_per_s,
                tokens_per_min=tokens_per_min,
                name=name,
            )
    if capacity < 1:
        raise ConfigError(f"rate_limit '{name}': capacity must be >= 1, got {capacity}")
    bound = limiter
    estimate = _estimate_of(tokens, name)

    def lane() -> Lane:
        return _Held(bound, estimate, name, capacity)

    return per_event(
        lane,
        name=name,
        kind="rate_limit",
        ordering="input",
        capacity=capacity,
        stats=bound.statistics,
        keeps_payload=True,
    )


class _Held:
    """rate_limit's per-event form for one run: each call waits its turn, then the limiter.

    A call that finds nobody waiting and budget free goes on at once (no
    future, no loop turn). Otherwise it waits for the call before it to leave
    and then for the limiter, so events leave in the order they came, the
    inactive ones included (they wait their turn but are not charged).
    """

    def __init__(
        self, limiter: Limiter, estimate: Callable[[Event], int], name: str, capacity: int
    ) -> None:
        self.limiter = limiter
        self.estimate = estimate
        self.name = name
        self.capacity = capacity
        self.waiting = 0
        self.tail: asyncio.Future[None] | None = None

    async def __call__(self, event: Event) -> Event:
        if not self.waiting:
            if not event.active:
                return event
            estimate = self._estimate(event)
            if isinstance(estimate, Event):
                return estimate
            if self.limiter.try_acquire(estimate) is not None:
                return event
        if self.waiting >= self.capacity:
            raise CapacityExceeded(
                f"rate_limit '{self.name}': more than {self.capacity} events waiting; "
                "feed it from a credit-limited source or raise capacity",
                stage=self.name,
            )
        ahead = self.tail
        left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tail = left
        self.waiting += 1
        try:
            if ahead is not None and not ahead.done():
                # Shielded: cancelling this call must not cancel the one ahead's signal.
                await asyncio.shield(ahead)
            if not event.active:
                return event
            estimate = self._estimate(event)
            if isinstance(estimate, Event):
                return estimate
            await self.limiter.acquire(estimate)
            return event
        finally:
            # Whether it went on or was cancelled, the next one may go.
            self.waiting -= 1
            left.set_result(None)
            if self.tail is left:
                self.tail = None

    def _estimate(self, event: Event) -> int | Event:
        """The event's token estimate, or the event failed when the estimate raises."""
        try:
            return self.estimate(event)
        except Exception as exc:
            return event.failed(exc, self.name)


def _estimate_of(tokens: TokenEstimate | None, name: str) -> Callable[[Event], int]:
    """The token estimate as a function of the event (0 without one)."""
    if tokens is None:
        return _no_tokens
    argument = argument_of(tokens, name)

    def estimate(event: Event) -> int:
        return int(tokens(argument(event)))

    return estimate


def _no_tokens(event: Event) -> int:
    return 0
