"""The rate_limit operator: each active event waits on a limiter before it goes on.

The limiter itself (rolling windows, permits, the shared registry) lives in
:mod:`streamflow.ops._limiter`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from streamflow.errors import CapacityExceeded, ConfigError
from streamflow.events import Event
from streamflow.ops._limiter import Limiter, RateLimiter
from streamflow.ops._limiter_registry import shared_limiter
from streamflow.ops._operator import Operator

__all__ = ["DEFAULT_CAPACITY", "TokenEstimate", "rate_limit"]

TokenEstimate = Callable[[Event], int]

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
        tokens: the token estimate of an event (default 0).
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

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state = _LimitState(bound, tokens, name, capacity, observer)
            upstream = source.subscribe(
                state.on_next, state.on_error, state.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, Disposable(state.dispose))

        return reactivex.create(subscribe)

    return Operator(
        fn=operator,
        name=name,
        kind="rate_limit",
        ordering="input",
        capacity=capacity,
        stats=bound.statistics,
    )


class _LimitState:
    """Per-subscription queue of events waiting for the limiter, drained by one task."""

    def __init__(
        self,
        limiter: Limiter,
        tokens: TokenEstimate | None,
        name: str,
        capacity: int,
        observer: abc.ObserverBase[Event],
    ) -> None:
        self.limiter = limiter
        self.tokens = tokens
        self.name = name
        self.capacity = capacity
        self.observer = observer
        self.waiting: deque[Event] = deque()
        self.task: asyncio.Task[None] | None = None
        self.upstream_done = False
        self.stopped = False

    def _estimate(self, event: Event) -> int:
        return 0 if self.tokens is None else int(self.tokens(event))

    def on_next(self, event: Event) -> None:
        if self.stopped:
            return
        if not self.waiting:
            if not event.active:
                self.observer.on_next(event)
                return
            try:
                permit = self.limiter.try_acquire(self._estimate(event))
            except Exception as exc:
                self.observer.on_next(event.failed(exc, self.name))
                return
            if permit is not None:
                self.observer.on_next(event)
                return
        if len(self.waiting) >= self.capacity:
            raise CapacityExceeded(
                f"rate_limit '{self.name}': more than {self.capacity} events waiting; "
                "feed it from a credit-limited source or raise capacity",
                stage=self.name,
            )
        self.waiting.append(event)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.waiting and not self.stopped:
            event = self.waiting[0]
            if event.active:
                try:
                    estimate = self._estimate(event)
                except Exception as exc:
                    event = event.failed(exc, self.name)
                else:
                    await self.limiter.acquire(estimate)
            self.waiting.popleft()
            if self.stopped:
                return
            self.observer.on_next(event)
        self.task = None
        self._maybe_complete()

    def on_error(self, error: Exception) -> None:
        self.dispose()
        self.observer.on_error(error)

    def on_completed(self) -> None:
        self.upstream_done = True
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self.upstream_done and not self.stopped and not self.waiting and self.task is None:
            self.stopped = True
            self.observer.on_completed()

    def dispose(self) -> None:
        self.stopped = True
        if self.task is not None:
            self.task.cancel()
            self.task = None
