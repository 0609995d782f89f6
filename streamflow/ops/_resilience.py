"""Resilience for model calls: fall back to another backend, and break the circuit.

Both wrap an async step (``Event -> Event``) and return one, so they sit
inside ``map_async`` and compose with its timeout, retry and limiter::

    answer = map_async(
        fallback(circuit_breaker(breaker)(call_gpt), call_local_model),
        retry=RetryPolicy(max_attempts=3),
        name="generate",
    )
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from streamflow.errors import CircuitOpen, ConfigError
from streamflow.events import Event, StepRecord
from streamflow.ops._map_async import StepFn
from streamflow.ops._retry import RetryPolicy, retry_call

__all__ = [
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "circuit_breaker",
    "fallback",
]

Backend = StepFn | tuple[str, StepFn]


def _label(backend: Backend) -> tuple[str, StepFn]:
    if isinstance(backend, tuple):
        return backend
    return getattr(backend, "__name__", None) or type(backend).__name__, backend


def fallback(
    primary: Backend,
    *fallbacks: Backend,
    when: Callable[[Exception], bool] | None = None,
    retry: RetryPolicy | None = None,
    name: str | None = None,
) -> StepFn:
    """Build a step that tries ``primary``, then each fallback in turn, until one answers.

    ::

        primary:    a--X            (X: fails after its retries)
        fallback:      a'           answered by the fallback
        out:        ---a'           trace: model=fallback, detail says why

    The trace record says which backend answered: the backend's own record
    (the one whose ``step`` is ``name``) keeps its ``model`` or gets the
    backend's label as model, and when a fallback answered its ``detail``
    names the backends that failed before it and how.

    Args:
        primary: the preferred backend: an async step or a ``(label, step)`` pair.
        fallbacks: backends to try next, in order.
        when: which errors move on to the next backend (default: any error);
            other errors are raised at once.
        retry: retries of each backend before moving on (default: one try each).
        name: the step name; use the same name as the ``map_async`` around it
            (which, by default, takes it from this step: the primary's label).

    Returns:
        An async step for ``map_async``; it raises the last backend's error when
        every backend failed.

    Raises:
        ConfigError: no fallback given.
    """
    if not fallbacks:
        raise ConfigError("fallback: give at least one backend after the primary")
    backends = [_label(primary), *(_label(b) for b in fallbacks)]
    step = name or backends[0][0]

    async def call(event: Event) -> Event:
        failures: list[str] = []
        last: Exception | None = None
        for index, (label, fn) in enumerate(backends):
            tried = await retry_call(functools.partial(fn, event), retry)
            exc = tried.error
            if exc is None:
                return _answered_by(event, tried.unwrap(), step, label, failures if index else [])
            if when is not None and not when(exc):
                raise exc
            failures.append(f"{label}: {type(exc).__name__}")
            last = exc
        assert last is not None
        raise last

    call.__name__ = step
    call.__qualname__ = step
    return call


def _answered_by(before: Event, after: Event, step: str, label: str, failed: list[str]) -> Event:
    if not isinstance(after, Event):
        return after
    detail = f"fell back to {label} after {', '.join(failed)}" if failed else None
    trace = after.trace
    if len(trace) > len(before.trace) and trace[-1].step == step:
        own = trace[-1]
        update: dict[str, Any] = {}
        if own.model is None:
            update["model"] = label
        if detail is not None:
            update["detail"] = f"{own.detail}; {detail}" if own.detail else detail
        if not update:
            return after
        return after.model_copy(update={"trace": [*trace[:-1], dataclasses.replace(own, **update)]})
    record = StepRecord.timed(step, time.time(), 0.0, 1, after.outcome, detail, model=label)
    return after.traced(record)


BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerStatistics:
    """A snapshot of a circuit breaker.

    Attributes:
        name: the breaker's name (the endpoint).
        state: ``closed`` (calls go through), ``open`` (calls fail fast) or
            ``half_open`` (a few probes go through).
        consecutive_failures: failures in a row while closed.
        opened: how many times it has opened.
        rejected: calls refused with CircuitOpen.
        successes: calls that went through and succeeded.
        failures: calls that went through and failed in a way that counts.
    """

    name: str
    state: BreakerState
    consecutive_failures: int
    opened: int
    rejected: int
    successes: int
    failures: int


def _counts_by_default(error: Exception) -> bool:
    # A bad request says nothing about the endpoint's health; transient errors do.
    return bool(getattr(error, "retriable", False)) or isinstance(
        error, TimeoutError | ConnectionError
    )


class CircuitBreaker:
    """Stop calling an endpoint that keeps failing, and probe it now and then.

    ::

        closed --(failure_threshold failures in a row)--> open
        open   --(reset_timeout seconds)----------------> half_open
        half_open --(a probe succeeds)------------------> closed
        half_open --(a probe fails)---------------------> open

    While open, calls fail at once with :class:`~streamflow.errors.CircuitOpen`
    (retriable, ``retry_after`` = seconds until the next probe), so a retry
    policy comes back when a probe may go. Time is the event loop's clock.
    Calls that were already running when the state changed do not count.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max: int = 1,
        *,
        name: str = "circuit",
        counts: Callable[[Exception], bool] | None = None,
        on_state_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        """Create a closed breaker.

        Args:
            failure_threshold: failures in a row that open the circuit.
            reset_timeout: seconds open before a probe is let through.
            half_open_max: probes allowed in flight while half open.
            name: the endpoint's name, in errors and statistics.
            counts: which errors count as failures (default: retriable errors,
                timeouts and connection errors); others count as answers.
            on_state_change: called with (old, new) on every transition, so
                the runtime can export the state without ops knowing metrics.

        Raises:
            ConfigError: a threshold, timeout or probe count below its minimum.
        """
        if failure_threshold < 1:
            raise ConfigError(f"breaker '{name}': failure_threshold must be >= 1")
        if reset_timeout <= 0:
            raise ConfigError(f"breaker '{name}': reset_timeout must be > 0 seconds")
        if half_open_max < 1:
            raise ConfigError(f"breaker '{name}': half_open_max must be >= 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max = half_open_max
        self.name = name
        self.counts = counts or _counts_by_default
        self.on_state_change = on_state_change
        self._state: BreakerState = "closed"
        self._generation = 0
        self._opened_at = 0.0
        self._probes = 0
        self.consecutive_failures = 0
        self.opened = 0
        self.rejected = 0
        self.successes = 0
        self.failures = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose timeout ran out reads half open)."""
        if self._state == "open":
            try:
                now = asyncio.get_running_loop().time()
            except RuntimeError:
                return self._state
            if now - self._opened_at >= self.reset_timeout:
                self._move("half_open")
        return self._state

    def _move(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        if new == "half_open":
            self._probes = 0
        if self.on_state_change is not None and old != new:
            self.on_state_change(old, new)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self.opened += 1
        self._move("open")

    async def call(self, fn: StepFn, event: Event) -> Event:
        """Run ``fn(event)`` through the breaker.

        Raises:
            CircuitOpen: the circuit is open, or half open with its probes busy.
            Exception: whatever ``fn`` raised.
        """
        loop = asyncio.get_running_loop()
        state = self.state
        if state == "open":
            self.rejected += 1
            remaining = self.reset_timeout - (loop.time() - self._opened_at)
            raise CircuitOpen(
                f"circuit '{self.name}' is open after {self.failure_threshold} failures in a "
                f"row; next probe in {remaining:.3g}s",
                retry_after=remaining,
                event_id=event.id,
            )
        probe = state == "half_open"
        if probe:
            if self._probes >= self.half_open_max:
                self.rejected += 1
                raise CircuitOpen(
                    f"circuit '{self.name}' is half open and its probe is still running",
                    event_id=event.id,
                )
            self._probes += 1
        generation = self._generation
        try:
            result = await fn(event)
        except Exception as exc:
            if generation == self._generation:
                if self.counts(exc):
                    self._failed(loop.time(), probe)
                else:
                    self._succeeded(probe)
            raise
        except BaseException:
            # Cancelled: no verdict on the endpoint, but the probe slot is free again.
            if probe and generation == self._generation:
                self._probes -= 1
            raise
        if generation == self._generation:
            self._succeeded(probe)
        return result

    def _succeeded(self, probe: bool) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        if probe:
            self._move("closed")

    def _failed(self, now: float, probe: bool) -> None:
        self.failures += 1
        if probe:
            self._open(now)
            return
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold:
            self.consecutive_failures = 0
            self._open(now)

    def wrap(self, fn: StepFn) -> StepFn:
        """Return ``fn`` guarded by this breaker, keeping its name."""

        async def guarded(event: Event) -> Event:
            return await self.call(fn, event)

        guarded.__name__ = getattr(fn, "__name__", "step")
        guarded.__qualname__ = guarded.__name__
        return guarded

    def statistics(self) -> BreakerStatistics:
        """Return a snapshot of the breaker."""
        return BreakerStatistics(
            name=self.name,
            state=self.state,
            consecutive_failures=self.consecutive_failures,
            opened=self.opened,
            rejected=self.rejected,
            successes=self.successes,
            failures=self.failures,
        )


def circuit_breaker(breaker: CircuitBreaker) -> Callable[[StepFn], StepFn]:
    """Guard async steps with ``breaker``: ``circuit_breaker(b)(call_model)``.

    Share one breaker between every step that calls the same endpoint.

    Args:
        breaker: the breaker to call through.

    Returns:
        A decorator that wraps an async step (keeping its name).
    """
    return breaker.wrap
