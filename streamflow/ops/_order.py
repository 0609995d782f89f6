"""Order for per-event forms: input order and per-key order around a step's call.

A lane is called in input order (the runtime's workers and the reactivex
adapter both do), so order is a matter of when each call may *return*
(input order) or *start* (per key). Neither holds a step slot while it waits.
"""

from __future__ import annotations

import asyncio
from collections import deque

from streamflow.events import Event
from streamflow.ops._operator import Lane

__all__ = ["InputOrder", "KeyOrder"]


class _Counted:
    """Statistics of a wrapped step lane: its slots, plus the events waiting here."""

    def __init__(self, inner: Lane) -> None:
        self.inner = inner
        self.slots = getattr(inner, "slots", None)
        self.waiting = 0
        self.peak_waiting = 0

    def _wait_more(self) -> None:
        self.waiting += 1
        if self.waiting > self.peak_waiting:
            self.peak_waiting = self.waiting

    @property
    def running(self) -> int:
        """Calls in flight now."""
        return self.slots.running if self.slots is not None else 0

    @property
    def peak_running(self) -> int:
        """The most calls ever in flight at once."""
        return self.slots.peak_running if self.slots is not None else 0

    @property
    def buffered(self) -> int:
        """Events waiting for a slot or for their turn."""
        return self.waiting + (self.slots.buffered if self.slots is not None else 0)

    @property
    def peak_buffered(self) -> int:
        """The most events ever waiting (for a slot, or for their turn)."""
        return self.peak_waiting + (self.slots.peak_buffered if self.slots is not None else 0)


class InputOrder(_Counted):
    """Calls return in the order they were made: a finished call waits for the ones before it.

    ::

        calls:    a b c          (b slow)
        return:   a - - c b  ->  a - - b c

    Every call takes a number as it starts; a call that finishes early parks
    until every earlier number has left, and whoever leaves wakes the next
    one. A cancelled call gives up its number, so later calls never wait for it.
    """

    def __init__(self, inner: Lane) -> None:
        super().__init__(inner)
        self.next_in = 0
        self.next_out = 0
        self.parked: dict[int, asyncio.Future[None]] = {}
        self.gone: set[int] = set()

    async def __call__(self, event: Event) -> Event:
        seq = self.next_in
        self.next_in += 1
        try:
            result = await self.inner(event)
        except BaseException:
            self._give_up(seq)
            raise
        if seq == self.next_out:
            self._advance()
            return result
        turn = asyncio.get_running_loop().create_future()
        self.parked[seq] = turn
        self._wait_more()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._advance()  # it had its turn: pass it on
            elif self.parked.pop(seq, None) is not None:
                self._give_up(seq)  # later calls must not wait for it
            raise
        finally:
            self.waiting -= 1
        self._advance()
        return result

    def _give_up(self, seq: int) -> None:
        if seq == self.next_out:
            self._advance()
        else:
            self.gone.add(seq)

    def _advance(self) -> None:
        # The call at next_out leaves. The next one, if parked, is woken and
        # leaves (advancing again) when it resumes, not now: a call that
        # finishes meanwhile must still find it ahead.
        self.next_out += 1
        while True:
            seq = self.next_out
            if seq in self.gone:
                self.gone.discard(seq)
            else:
                turn = self.parked.pop(seq, None)
                if turn is None:
                    return
                if not turn.cancelled():
                    turn.set_result(None)
                    return
                # Its call is being cancelled and will not leave by itself.
            self.next_out += 1


class KeyOrder(_Counted):
    """One call per event key at a time, in the order the calls were made.

    ::

        calls:   a1 b1 a2       (a, b: keys)
        run:     [a1..] [b1]
                       [a2]     a2 starts when a1 has returned

    Events without a key, and inactive events, go straight to the step.
    """

    def __init__(self, inner: Lane) -> None:
        super().__init__(inner)
        self.busy: dict[str, deque[asyncio.Future[None]]] = {}

    async def __call__(self, event: Event) -> Event:
        key = event.key
        if key is None or event.outcome != "ok":
            return await self.inner(event)
        queue = self.busy.get(key)
        if queue is None:
            self.busy[key] = deque()
        else:
            turn = asyncio.get_running_loop().create_future()
            queue.append(turn)
            self._wait_more()
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    # The key was handed to us just as we were cancelled: pass it on.
                    self._release(key)
                elif turn in queue:
                    queue.remove(turn)
                raise
            finally:
                self.waiting -= 1
        try:
            return await self.inner(event)
        finally:
            self._release(key)

    def _release(self, key: str) -> None:
        queue = self.busy[key]
        while queue:
            turn = queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self.busy[key]
