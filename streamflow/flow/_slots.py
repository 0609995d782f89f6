"""Slots: the bound on events in flight when operators run per event."""

from __future__ import annotations

import asyncio
from collections import deque

from streamflow.errors import CapacityExceeded
from streamflow.flow._adaptive import AdaptiveConcurrency

__all__ = ["Slots"]


class Slots:
    """A bound on events in flight for the per-event (lane) forms: a FIFO semaphore
    with the statistics the stream forms report.

    The way in is ``if not slots.try_take(): await slots.wait()``: a free slot
    costs no coroutine and no loop turn. Every way in ends with :meth:`release`.
    asyncio's Semaphore has neither the statistics nor a limit that can change
    (``adaptive``), and its fast path still creates a coroutine per event.

    Args:
        name: the step or stage, for errors.
        most: the bound.
        capacity: most events allowed to wait; more is a bug upstream (no credit).
        adaptive: an adaptive limit read instead of ``most``, if given.
    """

    def __init__(
        self, name: str, most: int, capacity: int, adaptive: AdaptiveConcurrency | None = None
    ) -> None:
        self.name = name
        self.most = most
        self.capacity = capacity
        self.adaptive = adaptive
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.running = 0
        self.peak_running = 0
        self.peak_buffered = 0

    @property
    def buffered(self) -> int:
        """Events waiting for a slot."""
        return len(self.waiting)

    def limit(self) -> int:
        """The bound now."""
        return self.most if self.adaptive is None else self.adaptive.limit

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for one; False otherwise."""
        # Twice per event and step: the limit and the count are inlined.
        running = self.running
        if self.waiting or running >= (self.most if self.adaptive is None else self.adaptive.limit):
            return False
        running += 1
        self.running = running
        if running > self.peak_running:
            self.peak_running = running
        return True

    def _take(self) -> None:
        self.running += 1
        if self.running > self.peak_running:
            self.peak_running = self.running

    async def wait(self) -> None:
        """Wait in line for a slot.

        Raises:
            CapacityExceeded: ``capacity`` events are waiting already.
        """
        if len(self.waiting) >= self.capacity:
            raise CapacityExceeded(
                f"'{self.name}': more than {self.capacity} events waiting; "
                "feed it from a credit-limited source or raise capacity",
                stage=self.name,
            )
        slot = asyncio.get_running_loop().create_future()
        self.waiting.append(slot)
        self.peak_buffered = max(self.peak_buffered, len(self.waiting))
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            elif slot in self.waiting:
                self.waiting.remove(slot)
            raise

    def release(self) -> None:
        """Give a slot back."""
        # A freed slot goes straight to the oldest waiter (FIFO), counted as still taken.
        self.running -= 1
        if not self.waiting:
            return
        limit = self.limit()
        while self.waiting and self.running < limit:
            slot = self.waiting.popleft()
            if not slot.done():
                self._take()
                slot.set_result(None)
