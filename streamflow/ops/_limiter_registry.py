"""One limiter per endpoint key, held by a registry that belongs to a runtime.

A provider limits an *endpoint*, so every step that names the same endpoint
key draws from one budget. Which budget depends on where the pipeline runs:
each run lends its runtime's :class:`LimiterRegistry` to the steps it runs
(through its :class:`~streamflow.ops.RunScope`, a context variable, so it
reaches every task of the run and nothing outside it). Two runtimes with
their own registries share nothing; two pipelines share a budget only when
they run under the same runtime (or are given the same registry).

:func:`shared_limiter` returns a :class:`SharedLimiter`, a handle that finds
the endpoint's limiter in the current registry each time it is used, so a
pipeline built once (at import) counts in whichever runtime runs it. Code
that runs outside any runtime (a test driving an operator by hand) uses a
registry of its own, :func:`current_limiters` returns it.

The registry does not count by itself: a :class:`LimiterBackend` makes its
limiters. The default counts in this process (:class:`InProcessLimiters`);
the runtime picks another backend from its settings (a Redis one shares one
budget between processes).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from streamflow.errors import ConfigError
from streamflow.ops._context import current_scope
from streamflow.ops._limiter import (
    Limiter,
    Permit,
    RateLimiter,
    RateLimitStatistics,
    check_limits,
    describe_limits,
)

__all__ = [
    "InProcessLimiters",
    "LimiterBackend",
    "LimiterRegistry",
    "SharedLimiter",
    "current_limiters",
    "reset_shared_limiters",
    "shared_limiter",
]


class LimiterBackend(Protocol):
    """Makes the limiter of an endpoint key; one backend serves one registry."""

    @property
    def description(self) -> str:
        """Where the counting happens (``in-process``, a Redis URL without password)."""
        ...

    def limiter(self, key: str, limits: dict[str, int | None]) -> Limiter:
        """Make the limiter of ``key`` with checked ``limits`` (no I/O here)."""
        ...

    async def open(self) -> None:
        """Connect, or fail at start with a :class:`~streamflow.errors.ConfigError`."""
        ...

    async def aclose(self) -> None:
        """Release connections (opening again reconnects)."""
        ...


class InProcessLimiters:
    """The default backend: each key's budget is counted in this process only."""

    description = "in-process"

    def __init__(self, *, guard: float | None = None) -> None:
        """Create the backend.

        Args:
            guard: seconds added to every window of its limiters (default
                ``DEFAULT_GUARD``); see :class:`RateLimiter`.
        """
        self.guard = guard

    def limiter(self, key: str, limits: dict[str, int | None]) -> Limiter:
        """Make an in-process :class:`RateLimiter` named ``key``."""
        return RateLimiter(
            requests_per_min=limits["requests_per_min"],
            requests_per_s=limits["requests_per_s"],
            tokens_per_min=limits["tokens_per_min"],
            name=key,
            guard=self.guard,
        )

    async def open(self) -> None:
        """Nothing to connect."""

    async def aclose(self) -> None:
        """Nothing to release."""


class LimiterRegistry:
    """The limiters of one runtime, one per endpoint key.

    A :class:`~streamflow.runtime.Runtime` holds one; its runs open it and
    lend it to their steps::

        runtime = Runtime(limiters=LimiterRegistry())      # counts in this process
        await run_flow(pipeline, source, sink, runtime=runtime)
    """

    def __init__(self, backend: LimiterBackend | None = None) -> None:
        """Create an empty registry.

        Args:
            backend: makes the limiters (default :class:`InProcessLimiters`).
        """
        self.backend: LimiterBackend = backend if backend is not None else InProcessLimiters()
        self._limiters: dict[str, Limiter] = {}
        self._handles: dict[str, SharedLimiter] = {}
        self._users = 0
        self.generation = 0  # bumped by clear(), so handles drop what they cached

    def get(
        self,
        key: str,
        *,
        requests_per_min: int | None = None,
        requests_per_s: int | None = None,
        tokens_per_min: int | None = None,
    ) -> Limiter:
        """Return the limiter of ``key``, making it on first use.

        Args:
            key: names the endpoint (for example ``"openai:gpt-4o-mini"``).
            requests_per_min: most calls in any 60 s.
            requests_per_s: most calls in any second.
            tokens_per_min: most tokens in any 60 s.

        Returns:
            The same limiter for the same key.

        Raises:
            ConfigError: the key has other limits here already, or no limit given.
        """
        existing = self._limiters.get(key)
        if existing is not None:
            limits = {
                "requests_per_min": requests_per_min,
                "requests_per_s": requests_per_s,
                "tokens_per_min": tokens_per_min,
            }
            if existing.limits != limits:
                raise _conflict(key, existing.limits, limits)
            return existing
        limits = check_limits(
            key,
            requests_per_min=requests_per_min,
            requests_per_s=requests_per_s,
            tokens_per_min=tokens_per_min,
        )
        limiter = self.backend.limiter(key, limits)
        self._limiters[key] = limiter
        return limiter

    def statistics(self) -> list[RateLimitStatistics]:
        """Return a snapshot of every limiter made so far, by key."""
        return [self._limiters[key].statistics() for key in sorted(self._limiters)]

    def clear(self) -> None:
        """Forget every limiter (their budgets start again from empty)."""
        self._limiters.clear()
        self._handles.clear()
        self.generation += 1

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[LimiterRegistry]:
        """Keep the backend connected while the block runs (runs that overlap share it).

        The first run to open it connects (a Redis backend checks that Redis
        answers); the last one to leave sends what is still owed (settles) and
        disconnects. Budgets outlive this: they are in the registry or in Redis.

        Raises:
            ConfigError: the backend cannot be reached; the message names the setting.
        """
        if self._users == 0:
            await self.backend.open()
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0:
                await self.backend.aclose()

    async def aclose(self) -> None:
        """Close the backend (its connections) and forget every limiter."""
        self.clear()
        await self.backend.aclose()

    def __repr__(self) -> str:
        return f"LimiterRegistry({self.backend.description}, keys={sorted(self._limiters)})"


class SharedLimiter:
    """The limiter of an endpoint key in whichever registry is current when it is used."""

    __slots__ = ("_cached", "_limits", "key")

    def __init__(self, key: str, limits: dict[str, int | None]) -> None:
        """Create a handle; :func:`shared_limiter` does, with checked limits."""
        self.key = key
        self._limits = limits
        self._cached: tuple[LimiterRegistry, int, Limiter] | None = None

    @property
    def name(self) -> str:
        """The endpoint key."""
        return self.key

    @property
    def limits(self) -> dict[str, int | None]:
        """The limits every registry gives this key."""
        return dict(self._limits)

    def resolve(self) -> Limiter:
        """Return the key's limiter in the current registry (made on first use).

        Raises:
            ConfigError: the current registry has this key with other limits.
        """
        registry = current_limiters()
        cached = self._cached
        # Every admission resolves: skip the lookup while the registry is the last one.
        if cached is not None and cached[0] is registry and cached[1] == registry.generation:
            return cached[2]
        limiter = registry.get(self.key, **self._limits)
        self._cached = (registry, registry.generation, limiter)
        return limiter

    def try_acquire(self, tokens: int = 0) -> Permit | None:
        """Admit one call now if that needs no waiting, else None."""
        return self.resolve().try_acquire(tokens)

    async def acquire(self, tokens: int = 0, *, hold: bool = False) -> Permit:
        """Wait until one more call of ``tokens`` fits the endpoint's budget, then charge it.

        Args:
            tokens: the estimated tokens in + out of the call (0 for none).
            hold: keep the call counted until the permit is settled (see
                :meth:`RateLimiter.acquire`).

        Returns:
            A :class:`Permit`; settle it with the real usage when known.
        """
        return await self.resolve().acquire(tokens, hold=hold)

    def statistics(self) -> RateLimitStatistics:
        """Return a snapshot of the key's limiter in the current registry."""
        return self.resolve().statistics()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SharedLimiter):
            return NotImplemented
        return self.key == other.key and self._limits == other._limits

    def __hash__(self) -> int:
        return hash((self.key, tuple(self._limits.items())))

    def __repr__(self) -> str:
        return f"shared_limiter({self.key!r}, {describe_limits(self._limits)})"


_OUTSIDE = LimiterRegistry()
# Code that runs outside any run (tests driving operators by hand) still needs
# somewhere to count; a run always counts in its runtime's registry instead.


def current_limiters() -> LimiterRegistry:
    """Return the registry of the run whose step is running, or the one for code outside any."""
    scope = current_scope()
    registry = scope.limiters if scope is not None else None
    return _OUTSIDE if registry is None else registry


def shared_limiter(
    key: str,
    *,
    requests_per_min: int | None = None,
    requests_per_s: int | None = None,
    tokens_per_min: int | None = None,
) -> SharedLimiter:
    """Return the limiter of endpoint ``key``: every step that names it shares one budget.

    Every step that calls the same endpoint should use the same key (for
    example ``"openai:gpt-4o-mini"``). The budget is the one of the runtime
    that runs the step (see :class:`LimiterRegistry`): counted in this
    process by default, or by every process that names the key when the
    runtime uses a shared backend (``STREAMFLOW_LIMITER_URL=redis://...``).

    Args:
        key: names the endpoint.
        requests_per_min: most calls in any 60 s.
        requests_per_s: most calls in any second.
        tokens_per_min: most tokens in any 60 s.

    Returns:
        A :class:`SharedLimiter`; the same one for the same key and registry.

    Raises:
        ConfigError: the key was declared before with other limits, or no limit given.
    """
    registry = current_limiters()
    limiter = registry.get(
        key,
        requests_per_min=requests_per_min,
        requests_per_s=requests_per_s,
        tokens_per_min=tokens_per_min,
    )
    handle = registry._handles.get(key)
    if handle is None:
        handle = registry._handles[key] = SharedLimiter(key, dict(limiter.limits))
    return handle


def reset_shared_limiters() -> None:
    """Forget every limiter of the current registry (tests, or a process reloading pipelines)."""
    current_limiters().clear()


def _conflict(key: str, before: dict[str, int | None], now: dict[str, int | None]) -> ConfigError:
    return ConfigError(
        f"rate limit key '{key}' is declared twice with different limits: "
        f"{describe_limits(before)} and {describe_limits(now)}; an endpoint has one "
        "budget, so give every step that uses this key the same limits"
    )
