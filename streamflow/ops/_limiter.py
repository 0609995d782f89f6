"""A budget of requests and tokens per model endpoint, counted in this process.

A provider limits an *endpoint* (requests and tokens per minute), not one
call site, so every step that calls the same endpoint must draw from the same
budget. :class:`RateLimiter` is that budget counted in this process; the
registry that hands out one limiter per endpoint key is
:mod:`streamflow.ops._registry`, and the operator that waits on a limiter is
:func:`streamflow.ops.rate_limit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from streamflow.errors import ConfigError
from streamflow.ops._context import instrumentation

__all__ = [
    "DEFAULT_GUARD",
    "Limiter",
    "Permit",
    "RateLimitStatistics",
    "RateLimiter",
    "check_limits",
    "describe_limits",
]

# Loop clocks are floats; looptime moves in 1e-6 s ticks. An entry this close
# to its expiry counts as expired, so a waiter never spins on a zero sleep.
_EPSILON = 1e-9

DEFAULT_GUARD = 0.05
"""Seconds added to every window unless a limiter says otherwise (see RateLimiter)."""


def check_limits(
    name: str,
    *,
    requests_per_min: int | None,
    requests_per_s: int | None,
    tokens_per_min: int | None,
) -> dict[str, int | None]:
    """Check the limits of a budget and return them by name.

    Args:
        name: the limiter's name, for the message.
        requests_per_min: most calls in any 60 s.
        requests_per_s: most calls in any second.
        tokens_per_min: most tokens in any 60 s.

    Returns:
        ``{"requests_per_min": ..., "requests_per_s": ..., "tokens_per_min": ...}``.

    Raises:
        ConfigError: no limit given, or a limit below 1.
    """
    limits = {
        "requests_per_min": requests_per_min,
        "requests_per_s": requests_per_s,
        "tokens_per_min": tokens_per_min,
    }
    for label, value in limits.items():
        if value is not None and value < 1:
            raise ConfigError(f"rate limiter '{name}': {label} must be >= 1, got {value}")
    if all(value is None for value in limits.values()):
        raise ConfigError(
            f"rate limiter '{name}': give requests_per_min, requests_per_s or tokens_per_min"
        )
    return limits


def describe_limits(limits: dict[str, int | None]) -> str:
    """``requests_per_min=500, tokens_per_min=200000``: the limits that are set."""
    return ", ".join(f"{k}={v}" for k, v in limits.items() if v is not None) or "no limits"


class _Admission:
    """One admission inside a window: when, and how much (corrected by settle)."""

    __slots__ = ("amount", "at", "held", "live")

    def __init__(self, at: float, amount: int, held: bool) -> None:
        self.at = at
        self.amount = amount
        self.held = held  # its call is in flight: it stays counted until settled
        self.live = True


class _Window:
    """A budget of ``limit`` units over any rolling ``period`` seconds.

    Stricter than a refilling bucket: a bucket of the same rate admits up to
    twice its limit in some window of that length (a full bucket, then the
    refill), while providers count usage per rolling window.
    """

    def __init__(self, limit: int, period: float, unit: str) -> None:
        self.limit = limit
        self.period = period
        self.unit = unit
        self.entries: deque[_Admission] = deque()
        # Held admissions older than the window whose calls are still in flight:
        # still counted, out of the queue so they do not hold up the ones behind.
        self.in_flight: set[_Admission] = set()
        self.used = 0

    def expire(self, now: float) -> None:
        entries = self.entries
        while entries and entries[0].at + self.period - now <= _EPSILON:
            entry = entries.popleft()
            if entry.held:
                self.in_flight.add(entry)
                continue
            entry.live = False
            self.used -= entry.amount

    def delay(self, now: float, amount: int) -> float:
        """Seconds until ``amount`` more fits (0 if it fits now); call after expire."""
        if self.used + amount <= self.limit:
            return 0.0
        # An amount larger than the whole limit goes alone, once the window is empty.
        need = self.used + min(amount, self.limit) - self.limit
        freed = 0
        for entry in self.entries:
            freed += entry.amount
            if freed >= need:
                return max(entry.at + self.period - now, _EPSILON)
        if self.in_flight:
            # Only calls still in flight can make room: wait for one to settle.
            return math.inf
        return max(self.entries[-1].at + self.period - now, _EPSILON) if self.entries else 0.0

    def admit(self, now: float, amount: int, held: bool = False) -> _Admission | None:
        if amount <= 0:
            return None
        entry = _Admission(now, amount, held)
        self.entries.append(entry)
        self.used += amount
        return entry

    def settle(self, entry: _Admission | None, now: float, actual: int) -> None:
        """The call of ``entry`` ended now having used ``actual``: charge that from now.

        The endpoint counted the call when it arrived, some time between its
        admission and now; an admission still inside the window therefore
        counts from now on, so however late the call arrived, no window of the
        endpoint's can hold more than the limit. An admission already out of
        the window is left alone (the guard covers that call's jitter), unless
        it was held: then it stayed counted while its call was in flight.
        """
        if entry is None:
            if actual > 0:
                self.admit(now, actual)
            return
        if not entry.live:
            return
        # The old place stays in the queue, empty, until it expires.
        self.in_flight.discard(entry)
        entry.live = entry.held = False
        self.used -= entry.amount
        entry.amount = 0
        self.admit(now, actual)


class Permit:
    """One admitted call; :meth:`settle` corrects its token estimate afterwards."""

    __slots__ = ("_on_settle", "estimate", "settled")

    def __init__(self, estimate: int, on_settle: Callable[[Permit, int], None]) -> None:
        """Create a permit; limiters do, callers get one from ``acquire``.

        Args:
            estimate: the tokens charged on admission.
            on_settle: corrects the limiter's charge, called once by :meth:`settle`.
        """
        self._on_settle = on_settle
        self.estimate = estimate
        self.settled = False

    def settle(self, actual_tokens: int) -> None:
        """Replace the estimate by the tokens the call really used (once).

        Args:
            actual_tokens: tokens in + out reported by the endpoint.
        """
        if self.settled:
            return
        self.settled = True
        self._on_settle(self, actual_tokens)


@dataclass(frozen=True)
class RateLimitStatistics:
    """A snapshot of a limiter.

    Attributes:
        name: the limiter's name (the endpoint key).
        requests: calls admitted so far.
        tokens: tokens charged so far (estimates, corrected by settle).
        waited_seconds: total time callers spent waiting for budget.
        waits: how many admissions had to wait.
        waiting: callers waiting now.
        requests_in_window: requests charged in the current minute window.
        tokens_in_window: tokens charged in the current minute window.
    """

    name: str
    requests: int
    tokens: int
    waited_seconds: float
    waits: int
    waiting: int
    requests_in_window: int
    tokens_in_window: int


class Limiter(Protocol):
    """What steps and operators wait on: a budget of requests and tokens for one endpoint.

    :class:`RateLimiter` counts in this process; a runtime may hand out
    limiters that count elsewhere (Redis, shared by every process), through
    a :class:`~streamflow.ops.LimiterRegistry`.
    """

    @property
    def name(self) -> str:
        """The endpoint (or step) the budget belongs to."""
        ...

    @property
    def limits(self) -> dict[str, int | None]:
        """``requests_per_min``, ``requests_per_s`` and ``tokens_per_min`` (None: no limit)."""
        ...

    def try_acquire(self, tokens: int = 0) -> Permit | None:
        """Admit one call now if that needs no waiting, else None (the caller then awaits)."""
        ...

    async def acquire(self, tokens: int = 0, *, hold: bool = False) -> Permit:
        """Wait until one more call of ``tokens`` fits every budget, then charge it.

        With ``hold``, the call stays counted until its permit is settled.
        """
        ...

    def statistics(self) -> RateLimitStatistics:
        """Return a snapshot of the limiter."""
        ...


class RateLimiter:
    """Budgets of requests and tokens per rolling window, waited on in FIFO order.

    ``await acquire(tokens=estimate)`` returns once every budget has room and
    charges it; time is the event loop's clock, so fake-time loops (looptime)
    see exact waits. Callers are admitted in arrival order, so a big request
    is not starved by a stream of small ones.
    """

    def __init__(
        self,
        *,
        requests_per_min: int | None = None,
        requests_per_s: int | None = None,
        tokens_per_min: int | None = None,
        name: str = "rate_limit",
        on_wait: Callable[[float], None] | None = None,
        guard: float | None = None,
    ) -> None:
        """Create a limiter; give at least one limit.

        Args:
            requests_per_min: most calls in any 60 s.
            requests_per_s: most calls in any second.
            tokens_per_min: most tokens (in + out) in any 60 s.
            name: a name for statistics and messages (the endpoint).
            on_wait: called with the seconds each waiting admission waited.
                Waits also go to ``instrumentation.report_rate_limit_wait``
                with the current stage, which the runtime turns into
                ``streamflow_rate_limit_wait_seconds_total``.
            guard: seconds added to every window (default ``DEFAULT_GUARD``,
                0.05 s). We count when a request
                leaves; the endpoint counts when it arrives. Network and
                scheduling jitter up to ``guard`` can then never put more than
                the limit into one of the endpoint's windows.

        Raises:
            ConfigError: no limit given, or a limit below 1.
        """
        limits = check_limits(
            name,
            requests_per_min=requests_per_min,
            requests_per_s=requests_per_s,
            tokens_per_min=tokens_per_min,
        )
        self.name = name
        self.on_wait = on_wait
        self.limits = limits
        guard = DEFAULT_GUARD if guard is None else guard
        if guard < 0:
            raise ConfigError(f"rate limiter '{name}': guard must be >= 0 seconds, got {guard}")
        self._request_windows: list[_Window] = []
        if requests_per_s is not None:
            self._request_windows.append(_Window(requests_per_s, 1.0 + guard, "requests"))
        if requests_per_min is not None:
            self._request_windows.append(_Window(requests_per_min, 60.0 + guard, "requests"))
        self._token_window = (
            _Window(tokens_per_min, 60.0 + guard, "tokens") if tokens_per_min is not None else None
        )
        self._minute_requests = _Window(2**62, 60.0, "requests")
        self._queue: deque[asyncio.Future[None]] = deque()
        self._nudge: asyncio.Future[None] | None = None
        self._now = 0.0
        self.requests = 0
        self.tokens = 0
        self.waited_seconds = 0.0
        self.waits = 0

    def _delay(self, now: float, tokens: int) -> float:
        delay = 0.0
        for window in self._request_windows:
            window.expire(now)
            delay = max(delay, window.delay(now, 1))
        if self._token_window is not None:
            self._token_window.expire(now)
            delay = max(delay, self._token_window.delay(now, tokens))
        return delay

    def _admit(self, now: float, tokens: int, hold: bool = False) -> Permit:
        self._now = now
        held = [(window, window.admit(now, 1, hold)) for window in self._request_windows]
        self._minute_requests.expire(now)
        self._minute_requests.admit(now, 1)
        token_window = self._token_window
        entry = token_window.admit(now, tokens, hold) if token_window is not None else None
        self.requests += 1
        self.tokens += max(tokens, 0)
        return Permit(tokens, functools.partial(self._settle, held, entry))

    def try_acquire(self, tokens: int = 0) -> Permit | None:
        """Admit one call now if nobody waits and every budget has room, else None.

        Must be called on the event loop thread.
        """
        if self._queue:
            return None
        now = asyncio.get_running_loop().time()
        if self._delay(now, tokens) > 0:
            return None
        return self._admit(now, tokens)

    async def acquire(self, tokens: int = 0, *, hold: bool = False) -> Permit:
        """Wait until one more call of ``tokens`` fits every budget, then charge it.

        Args:
            tokens: the estimated tokens in + out of the call (0 for none).
            hold: the caller settles the permit when its call ends; until then
                the call stays counted, however long it takes (the endpoint
                may see it arrive late). An unsettled held permit is never freed.

        Returns:
            A :class:`Permit`; settle it with the real usage when known.
        """
        loop = asyncio.get_running_loop()
        if not self._queue:
            now = loop.time()
            if self._delay(now, tokens) <= 0:
                return self._admit(now, tokens, hold)
        turn: asyncio.Future[None] = loop.create_future()
        self._queue.append(turn)
        started = loop.time()
        try:
            if self._queue[0] is not turn:
                await turn
            while True:
                now = loop.time()
                delay = self._delay(now, tokens)
                if delay <= 0:
                    return self._admit(now, tokens, hold)
                await self._sleep(loop, delay)
        finally:
            self._leave(turn)
            waited = loop.time() - started
            self.waited_seconds += waited
            self.waits += 1
            if self.on_wait is not None:
                self.on_wait(waited)
            instrumentation.report_rate_limit_wait(self.name, waited)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        # A future, not asyncio.sleep, so a refund (settle below the estimate) wakes us early.
        nudge: asyncio.Future[None] = loop.create_future()
        self._nudge = nudge
        # An infinite delay waits for a held call to settle, which nudges.
        handle = loop.call_later(delay, _resolve, nudge) if math.isfinite(delay) else None
        try:
            await nudge
        finally:
            if handle is not None:
                handle.cancel()
            if self._nudge is nudge:
                self._nudge = None

    def _leave(self, turn: asyncio.Future[None]) -> None:
        was_head = bool(self._queue) and self._queue[0] is turn
        with contextlib.suppress(ValueError):
            self._queue.remove(turn)
        if was_head:
            while self._queue:
                head = self._queue[0]
                if not head.done():
                    head.set_result(None)
                    break
                self._queue.popleft()

    def _settle(
        self,
        held: list[tuple[_Window, _Admission | None]],
        entry: _Admission | None,
        permit: Permit,
        actual: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.tokens += actual - permit.estimate
        freed_held = False
        for window, admission in held:
            window.expire(now)
            freed_held = freed_held or (admission is not None and admission in window.in_flight)
            window.settle(admission, now, 1)
        if self._token_window is not None:
            self._token_window.expire(now)
            freed_held = freed_held or (entry is not None and entry in self._token_window.in_flight)
            self._token_window.settle(entry, now, actual)
        if (actual < permit.estimate or freed_held) and self._nudge is not None:
            _resolve(self._nudge)

    def statistics(self) -> RateLimitStatistics:
        """Return a snapshot of the limiter."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            now = self._now
        self._minute_requests.expire(now)
        tokens_in_window = 0
        if self._token_window is not None:
            self._token_window.expire(now)
            tokens_in_window = self._token_window.used
        return RateLimitStatistics(
            name=self.name,
            requests=self.requests,
            tokens=self.tokens,
            waited_seconds=self.waited_seconds,
            waits=self.waits,
            waiting=len(self._queue),
            requests_in_window=self._minute_requests.used,
            tokens_in_window=tokens_in_window,
        )

    def __repr__(self) -> str:
        return f"RateLimiter({describe_limits(self.limits)}, name={self.name!r})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
