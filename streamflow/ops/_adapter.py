"""The one bridge between an operator's per-event form and reactivex.

Every built-in operator is written once, as a *lane*: an async function that
does to one event what the operator does and never raises for the event's own
failures. :func:`stream_of` derives its reactivex form from that, so
``reactivex.pipe`` composes streamflow operators while the runtime awaits the
lanes directly. :func:`lane_of` goes the other way for a user's own 1:1
reactivex operator inside ``route`` or ``parallel``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler.eventloop import AsyncIOScheduler

from streamflow.errors import CapacityExceeded, StepFailed
from streamflow.events import Event
from streamflow.ops._gate import Relay
from streamflow.ops._operator import EventOperator, Lane, LaneFactory, Operator, Ordering

__all__ = ["DEFAULT_CAPACITY", "lane_of", "per_event", "stream_of"]

DEFAULT_CAPACITY = 4096
"""Bound on events waiting inside one subscription when an operator names none."""

_YIELD_EVERY = 64
"""Events a worker handles before it gives the loop a turn (steps that never suspend)."""


def per_event(
    lane: LaneFactory,
    *,
    name: str,
    kind: str,
    ordering: Ordering = "input",
    requires: Ordering | None = None,
    capacity: int | None = None,
    branches: tuple[tuple[str, Operator], ...] = (),
    stats: Callable[[], object] | None = None,
    payload_in: type[Any] | None = None,
    payload_out: type[Any] | None = None,
    keeps_payload: bool = False,
) -> Operator:
    """Make an Operator from its per-event form; its reactivex form is :func:`stream_of`.

    Args:
        lane: makes the per-event form, fresh for each run or subscription.
        name: the operator's name in diagrams and errors.
        kind: ``map_async``, ``route``, ``filter`` ...
        ordering: what order the lane's results keep relative to its calls.
        requires: the input order it needs, if any.
        capacity: its bound on events waiting inside it (None: the default bound).
        branches: labelled sub-operators.
        stats: returns its statistics.
        payload_in: the payload type it takes (None: any).
        payload_out: the payload type it hands on (None: not known).
        keeps_payload: it never changes the payload.

    Returns:
        An Operator that runs the same code per event (runtime) and as a stream.
    """
    return Operator(
        fn=stream_of(lane, name=name, capacity=capacity),
        name=name,
        kind=kind,
        ordering=ordering,
        requires=requires,
        capacity=capacity,
        branches=branches,
        stats=stats,
        lane=lane,
        payload_in=payload_in,
        payload_out=payload_out,
        keeps_payload=keeps_payload,
    )


def stream_of(lane: LaneFactory, *, name: str, capacity: int | None = None) -> EventOperator:
    """Derive the reactivex form of an operator from its per-event form.

    ::

        in:    --a--b--c--|
        lane:    [a] [b...]
                      [c]
        out:   ----a----c-b|     (the lane's own order: an ordered lane returns in order)

    Each subscription makes its own lane and calls it for every event, in
    input order, from long-lived workers (one per event inside at most). The
    lane holds the operator's bounds (slots) and ordering (an ordered lane
    returns its events in order), so the adapter emits each result as its
    call returns. At most ``capacity`` events wait to be called; more means
    the source ignores credit, which is a bug, so it raises.

    Args:
        lane: makes the per-event form.
        name: the operator's name, for errors.
        capacity: bound on events inside the subscription (None: the default).

    Returns:
        A reactivex operator.
    """
    bound = capacity or DEFAULT_CAPACITY

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state = _LaneStream(lane(), observer, name, bound)
            upstream = source.subscribe(
                state.on_next, state.on_error, state.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, Disposable(state.dispose))

        return reactivex.create(subscribe)

    return operator


class _LaneStream:
    """One subscription of a lane: a FIFO of events and the workers that call the lane."""

    def __init__(
        self, lane: Lane, observer: abc.ObserverBase[Event], name: str, capacity: int
    ) -> None:
        self.lane = lane
        self.observer = observer
        self.name = name
        self.capacity = capacity
        self.loop = asyncio.get_running_loop()
        self.pending: deque[Event] = deque()
        self.idle: list[asyncio.Future[bool]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.inside = 0
        self.upstream_done = False
        self.stopped = False

    def on_next(self, event: Event) -> None:
        if self.stopped:
            return
        if len(self.pending) >= self.capacity:
            raise CapacityExceeded(
                f"'{self.name}': more than {self.capacity} events waiting; "
                "feed it from a credit-limited source or raise capacity",
                stage=self.name,
            )
        self.pending.append(event)
        if self.idle:
            self.idle.pop().set_result(True)
        elif len(self.tasks) < self.capacity:
            task = self.loop.create_task(self._work())
            self.tasks.add(task)
            task.add_done_callback(self._worker_done)

    async def _work(self) -> None:
        lane, pending, observer = self.lane, self.pending, self.observer
        handled = 0
        while not self.stopped:
            if not pending:
                if self.upstream_done:
                    return
                # Park until on_next has work; False means the stream is over.
                parked = self.loop.create_future()
                self.idle.append(parked)
                if not await parked:
                    return
                continue
            event = pending.popleft()
            self.inside += 1
            try:
                result = await lane(event)
            finally:
                self.inside -= 1
            if self.stopped:
                return
            observer.on_next(result)
            self._maybe_complete()
            handled += 1
            if not handled % _YIELD_EVERY and pending:
                # A lane that never suspends would hold the loop for a whole backlog.
                await asyncio.sleep(0)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.stopped or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.dispose()
            self.observer.on_error(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))

    def on_error(self, error: Exception) -> None:
        self.dispose()
        self.observer.on_error(error)

    def on_completed(self) -> None:
        self.upstream_done = True
        if not self.pending:
            self._release_idle()
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self.upstream_done and not self.stopped and not self.pending and not self.inside:
            self.stopped = True
            self._release_idle()
            self.observer.on_completed()

    def _release_idle(self) -> None:
        while self.idle:
            parked = self.idle.pop()
            if not parked.done():
                parked.set_result(False)

    def dispose(self) -> None:
        self.stopped = True
        self._release_idle()
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()


def lane_of(op: Operator) -> Lane:
    """The per-event form of ``op``: its own, or a bridge through its reactivex form.

    The bridge is for a user's own reactivex operator inside ``route`` or
    ``parallel``: it feeds the operator one event at a time and hands each
    call the event that comes out with the same id, so the operator must emit
    exactly one event per input and keep its id (``reactivex.operators.map``
    over events does). An event of an id nobody waits for stops the run.
    """
    if op.lane is not None:
        return op.lane()
    entry = Relay()
    waiting: dict[str, deque[asyncio.Future[Event]]] = {}
    broken: list[Exception] = []

    def on_next(result: Event) -> None:
        queue = waiting.get(result.id)
        if not queue:
            raise StepFailed(
                f"'{op.name}' emitted an event (id {result.id!r}) it was not given; an operator "
                "inside route or parallel must emit one event per input and keep its id",
                stage=op.name,
                event_id=result.id,
            )
        call = queue.popleft()
        if not queue:
            del waiting[result.id]
        if not call.done():
            call.set_result(result)

    def on_error(error: Exception) -> None:
        broken.append(error)
        for queue in waiting.values():
            for call in queue:
                if not call.done():
                    call.set_exception(error)
        waiting.clear()

    subscribed: list[abc.DisposableBase] = []

    async def bridge(event: Event) -> Event:
        loop = asyncio.get_running_loop()
        if not subscribed:
            subscribed.append(
                op(entry).subscribe(on_next, on_error, scheduler=AsyncIOScheduler(loop))
            )
        if broken:
            raise broken[0]
        call: asyncio.Future[Event] = loop.create_future()
        waiting.setdefault(event.id, deque()).append(call)
        entry.on_next(event)
        return await call

    return bridge
