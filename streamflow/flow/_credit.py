"""Credit: the window that bounds how many events are inside a pipeline.

A source takes one credit per record before it emits; the credit comes back
when the event leaves the flow (written, filtered or dead-lettered). So the
number of events in flight, and every buffer behind the source, stays <= W.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamflow.errors import ConfigError

__all__ = ["CreditStatistics", "CreditWindow", "Ticket"]


@dataclass(frozen=True)
class CreditStatistics:
    """A snapshot of a credit window.

    Attributes:
        size: the window W.
        in_use: credits held by events in flight.
        peak_in_use: the most ever held at once.
        waited_seconds: total time the source spent waiting for credit.
    """

    size: int
    in_use: int
    peak_in_use: int
    waited_seconds: float


class CreditWindow:
    """A counting window of W credits that a source awaits and sinks return."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigError(f"credit window must be >= 1, got {size}")
        self.size = size
        self.in_use = 0
        self.peak_in_use = 0
        self.waited_seconds = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._wake_at = 1
        self._woken = False

    @property
    def available(self) -> int:
        """Credits free right now."""
        return self.size - self.in_use

    def take(self, n: int = 1) -> None:
        """Take ``n`` credits that are known to be free (after :meth:`wait`)."""
        self.in_use += n
        if self.in_use > self.peak_in_use:
            self.peak_in_use = self.in_use

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` credits are free, then take them."""
        if self.available < n:
            await self.wait(n)
        self.take(n)

    async def wait(self, n: int = 1, timeout: float | None = None) -> bool:
        """Wait until at least ``n`` credits are free (or ``timeout``); True if they are."""
        if self.available >= n:
            return True
        # The loop clock, which asyncio timeouts use, so fake-time tests see real figures.
        clock = asyncio.get_running_loop().time
        started = clock()
        try:
            while self.available < n:
                if self._woken:
                    self._woken = False
                    return False
                self._wake_at = n
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    if timeout is None:
                        await self._waiter
                    else:
                        await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
                except TimeoutError:
                    return self.available >= n
                finally:
                    self._waiter = None
            return True
        finally:
            self.waited_seconds += clock() - started

    def give(self, n: int = 1) -> None:
        """Return ``n`` credits; wakes a waiting source when enough are free."""
        self.in_use -= n
        if self.in_use < 0:
            raise AssertionError("credit returned twice: in_use went below zero")
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self.available >= self._wake_at:
            waiter.set_result(None)

    def wake(self) -> None:
        """End a source's wait for credit now (a stop was asked); the wait returns False.

        A source blocked on a full window behind slow steps would otherwise only
        see a stop when a credit comes back.
        """
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._woken = True
            waiter.set_result(None)

    def statistics(self) -> CreditStatistics:
        """Return a snapshot of the window."""
        return CreditStatistics(self.size, self.in_use, self.peak_in_use, self.waited_seconds)


class Ticket:
    """One record's claim on the window; released exactly once when it is done.

    ``on_release`` runs after the credit is back (the Kafka source marks the
    offset complete there). Releasing twice is a no-op, so a sink and a
    shutdown path can both release safely.
    """

    __slots__ = ("_on_release", "_window", "read_at", "released")

    def __init__(self, window: CreditWindow, on_release: Callable[[], None] | None = None) -> None:
        self._window = window
        self._on_release = on_release
        self.released = False
        self.read_at = time.perf_counter()

    def release(self) -> None:
        """Give the credit back and run ``on_release``, once."""
        if self.released:
            return
        self.released = True
        self._window.give(1)
        if self._on_release is not None:
            self._on_release()
