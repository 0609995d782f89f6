"""Model budgets kept in Redis, so every process that names an endpoint shares one.

The in-process :class:`~streamflow.ops.RateLimiter` counts what one process
sends; with two ``generate`` workers the provider sees twice the limit.
:class:`RedisLimiters` is a limiter backend whose budgets live in Redis: each
admission runs one Lua script that checks every window of the budget and
charges it (see :mod:`._scripts`), so processes cannot both take the last
slot. Settling a permit when the call ended corrects its charge in Redis:
the real token usage (a refund when it is below the estimate), counted from
the call's end, since the endpoint saw the call arrive some time before.

A held admission (a model call in flight, ``acquire(hold=True)``) is scored
in the future until it is settled, so it stays counted for every process
however late the call reaches the endpoint; if its process dies, it comes back
after ``HOLD_LIMIT_US``.

Inside one process, callers wait in arrival order (one of them asks Redis at
a time); between processes, whoever asks first after a slot frees gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamflow.errors import ConfigError, Unavailable
from streamflow.limits._scripts import ACQUIRE, SETTLE
from streamflow.ops import Limiter, Permit, RateLimitStatistics, instrumentation
from streamflow.ops._limiter import DEFAULT_GUARD, describe_limits

__all__ = ["DEFAULT_PREFIX", "RedisLimiter", "RedisLimiters"]

log = logging.getLogger("streamflow.limiter")

DEFAULT_PREFIX = "streamflow:limiter:"

HOLD_LIMIT_US = 120_000_000
"""A held call stays counted at most 2 minutes unsettled: its process may have died
(kill -9) with calls in flight, and their places come back that long afterwards."""

RECHECK_S = 0.25
"""Longest sleep of a waiter between two looks at the shared budget."""

_SCHEMES = ("redis", "rediss", "unix")


class RedisLimiters:
    """A limiter backend that keeps every endpoint's budget in one Redis.

    Give it to a :class:`~streamflow.ops.LimiterRegistry`; the runtime does
    when ``STREAMFLOW_LIMITER_URL`` names a Redis.
    """

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, guard: float | None = None
    ) -> None:
        """Create the backend; nothing connects until :meth:`open` or the first admission.

        Args:
            url: ``redis://[:password@]host:port/db``, ``rediss://`` (TLS) or ``unix://``.
            prefix: put before every key, to keep budgets apart on a shared Redis.
            guard: seconds added to every window (default ``DEFAULT_GUARD``), as
                for the in-process limiter.

        Raises:
            ConfigError: the URL is not a Redis URL.
        """
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"limiter URL {_redacted(url)!r} is not a Redis URL; "
                "give redis://host:port/db (or rediss://, unix://)"
            )
        self._options: dict[str, Any] = {
            # A restarted Redis or a dropped connection is retried briefly
            # before the admission fails as Unavailable.
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_connect_timeout": 5.0,
            "socket_timeout": 5.0,
        }
        try:
            aioredis.Redis.from_url(url, **self._options)  # checks the URL, connects nothing
        except ValueError as exc:
            raise ConfigError(f"limiter URL {_redacted(url)!r}: {exc}") from None
        self.url = url
        self.prefix = prefix
        self.guard = DEFAULT_GUARD if guard is None else guard
        if self.guard < 0:
            raise ConfigError(f"limiter guard must be >= 0 seconds, got {self.guard}")
        # One client per open: its connections belong to the event loop that opened it.
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._limiters: list[RedisLimiter] = []

    @property
    def description(self) -> str:
        """The Redis URL, without its password."""
        return _redacted(self.url)

    def limiter(self, key: str, limits: dict[str, int | None]) -> Limiter:
        """Make the limiter of endpoint ``key`` (no I/O until it is used)."""
        limiter = RedisLimiter(self, key, limits)
        self._limiters.append(limiter)
        return limiter

    async def open(self) -> None:
        """Connect and check that Redis answers.

        Raises:
            ConfigError: it does not (the message names ``STREAMFLOW_LIMITER_URL``).
        """
        try:
            await self._connected().ping()
        except RedisError as exc:
            await self.aclose()
            raise ConfigError(
                f"limiter Redis at {self.description} does not answer ({exc}); start it, "
                "or unset STREAMFLOW_LIMITER_URL to count model budgets per process"
            ) from None

    async def aclose(self) -> None:
        """Send the settles still on their way, then close the connections."""
        for limiter in self._limiters:
            await limiter.settled()
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            await client.aclose()

    def _connected(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.url, **self._options)
            self._scripts = {
                "acquire": self._client.register_script(ACQUIRE),
                "settle": self._client.register_script(SETTLE),
            }
        return self._client

    async def _call(self, script: str, keys: list[str], args: list[Any], name: str) -> list[int]:
        self._connected()
        try:
            result = await self._scripts[script](keys=keys, args=args)
        except RedisError as exc:
            raise Unavailable(
                f"rate limiter '{name}': Redis at {self.description} failed: {exc}", stage=name
            ) from exc
        return [int(value) for value in result] if isinstance(result, list) else [int(result)]


class RedisLimiter:
    """The budget of one endpoint key, kept in Redis and shared by every process."""

    def __init__(self, backend: RedisLimiters, key: str, limits: dict[str, int | None]) -> None:
        """Create the limiter; :meth:`RedisLimiters.limiter` does.

        Args:
            backend: the Redis connection and key prefix.
            key: the endpoint key; every process naming it shares the budget.
            limits: checked limits (``requests_per_min``, ``requests_per_s``, ``tokens_per_min``).
        """
        self.name = key
        self.limits = dict(limits)
        self._backend = backend
        guard_us = int(backend.guard * 1_000_000)
        # The hash tag ({key}) keeps one budget's keys on one Redis Cluster slot.
        base = f"{backend.prefix}{{{key}}}"
        self._windows: list[tuple[str, int, int]] = []  # (kind, limit, period in µs)
        if limits["requests_per_s"] is not None:
            self._windows.append(("rps", limits["requests_per_s"], 1_000_000 + guard_us))
        if limits["requests_per_min"] is not None:
            self._windows.append(("rpm", limits["requests_per_min"], 60_000_000 + guard_us))
        if limits["tokens_per_min"] is not None:
            self._windows.append(("tpm", limits["tokens_per_min"], 60_000_000 + guard_us))
        self._keys = [f"{base}:{kind}:{part}" for kind, _, _ in self._windows for part in "zau"]
        self._turn = asyncio.Lock()  # FIFO: waiters in this process go in arrival order
        self._nudge: asyncio.Future[None] | None = None
        self._refunds: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.tokens = 0
        self.waited_seconds = 0.0
        self.waits = 0
        self.waiting = 0
        self._requests_in_window = 0
        self._tokens_in_window = 0

    def try_acquire(self, tokens: int = 0) -> Permit | None:
        """Return None: asking Redis takes a round trip, so callers await :meth:`acquire`."""
        return None

    async def acquire(self, tokens: int = 0, *, hold: bool = False) -> Permit:
        """Wait until one more call of ``tokens`` fits the shared budget, then charge it.

        Args:
            tokens: the estimated tokens in + out of the call (0 for none).
            hold: the call stays counted until the permit is settled, for every
                process (at most ``HOLD_LIMIT_US``, in case this process dies first).

        Returns:
            A :class:`~streamflow.ops.Permit`; settle it with the real usage when known.

        Raises:
            Unavailable: Redis did not answer (after brief retries).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = self._turn.locked()
        member = uuid.uuid4().hex
        args: list[Any] = [member, len(self._windows), HOLD_LIMIT_US if hold else 0]
        for kind, limit, period in self._windows:
            args += [limit, period, max(tokens, 0) if kind == "tpm" else 1]
        self.waiting += 1
        try:
            async with self._turn:
                while True:
                    answer = await self._backend._call("acquire", self._keys, args, self.name)
                    self._observe(answer[2:])
                    if answer[0] == 1:
                        break
                    waited = True
                    # Another process may settle a held call at any time; it
                    # cannot nudge us, so look again at least this often.
                    await self._sleep(loop, min(answer[1] / 1_000_000, RECHECK_S))
        finally:
            self.waiting -= 1
            if waited:
                seconds = loop.time() - started
                self.waited_seconds += seconds
                self.waits += 1
                instrumentation.report_rate_limit_wait(self.name, seconds)
        self.requests += 1
        self.tokens += max(tokens, 0)
        uncharged = tokens <= 0
        return Permit(tokens, functools.partial(self._on_settle, member, uncharged))

    def _observe(self, used: list[int]) -> None:
        for (kind, _, _), amount in zip(self._windows, used, strict=False):
            if kind == "tpm":
                self._tokens_in_window = amount
            else:
                self._requests_in_window = amount

    async def _sleep(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        # A future, not asyncio.sleep, so a refund from this process wakes the head early.
        nudge: asyncio.Future[None] = loop.create_future()
        self._nudge = nudge
        handle = loop.call_later(delay, _resolve, nudge)
        try:
            await nudge
        finally:
            handle.cancel()
            if self._nudge is nudge:
                self._nudge = None

    def _on_settle(self, member: str, uncharged: bool, permit: Permit, actual: int) -> None:
        self.tokens += actual - permit.estimate
        task = asyncio.get_running_loop().create_task(
            self._settle(member, uncharged, max(actual, 0), refund=actual < permit.estimate)
        )
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)

    async def _settle(self, member: str, uncharged: bool, actual: int, *, refund: bool) -> None:
        args: list[Any] = [member, len(self._windows)]
        for kind, _, period in self._windows:
            tokens = kind == "tpm"
            args += [period, actual if tokens else 1, "1" if tokens and uncharged else "0"]
        try:
            answer = await self._backend._call("settle", self._keys, args, self.name)
        except Unavailable as exc:
            # The charge stays as admitted, which errs on the safe side for the
            # estimate but not for a call that arrived late: say so.
            log.warning("%s; the call stays charged as admitted", exc)
            return
        self._observe(answer)
        if refund and self._nudge is not None:
            _resolve(self._nudge)

    async def settled(self) -> None:
        """Wait until every settle sent so far has reached Redis."""
        while self._refunds:
            await asyncio.gather(*list(self._refunds), return_exceptions=True)

    def statistics(self) -> RateLimitStatistics:
        """Return a snapshot; the in-window figures are the shared ones Redis last reported."""
        return RateLimitStatistics(
            name=self.name,
            requests=self.requests,
            tokens=self.tokens,
            waited_seconds=self.waited_seconds,
            waits=self.waits,
            waiting=self.waiting,
            requests_in_window=self._requests_in_window,
            tokens_in_window=self._tokens_in_window,
        )

    def __repr__(self) -> str:
        return (
            f"RedisLimiter({describe_limits(self.limits)}, name={self.name!r}, "
            f"redis={self._backend.description})"
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    with contextlib.suppress(ValueError):
        return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    return f"{parts.scheme}://***"
