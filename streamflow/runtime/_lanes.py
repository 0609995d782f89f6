"""The one engine of a run: each event runs through the stages in one coroutine.

Every streamflow operator is written as its per-event form
(:attr:`Operator.lane`), so in one process a worker takes an event and
awaits each stage's lane in turn, under the same bounds (a stage's
concurrency, each step's slots). A hop through a stream costs several
observer calls and a worker hand-off per step; a lane costs one await.

A stage that holds a user's own reactivex operator (one without a per-event
form, which may batch, delay or regroup events) runs that stage alone on the
observable path, behind a bounded gate with the same bounds and metrics; the
stages around it still run per event. The run is then a chain of segments.

Workers are long-lived, one per event in flight at most (the window bounds
them), so a context variable a step sets is seen by the next event that
worker takes. Pushed events wait in a queue; idle workers are woken for them
once per loop turn, and a worker that finishes an event first takes the next
one without a wake-up. Each worker points :data:`current_stage` at its own place and
moves that place from stage to stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence

from reactivex.scheduler.eventloop import AsyncIOScheduler

from streamflow.events import Event, ticket_of
from streamflow.flow import Slots
from streamflow.ops import Operator
from streamflow.ops._context import StagePlace, current_stage
from streamflow.ops._gate import ChannelStatistics, Relay, gate
from streamflow.ops._map_async import StepFn, StepLane, with_record
from streamflow.ops._operator import Lane
from streamflow.runtime._pipeline import Stage, StageHooks

__all__ = ["LaneEngine"]

CANCEL_WAIT = 1.0
"""Seconds to let cancelled events unwind when the engine is disposed."""

Meter = Callable[[Event, float, int], None]


class _LaneStage:
    """One stage: its lane and the slots that bound and count the events inside it.

    A stage without a concurrency of its own is bounded by the window, which
    the source enforces already, so its slots never make an event wait. When
    such a stage is one direct step, the step's slots are the stage's: they
    count the same events, and sparing the second pair saves two calls per
    event and stage.
    """

    def __init__(self, stage: Stage, window: int, meter: Meter | None) -> None:
        assert stage.op.lane is not None
        self.name = stage.name
        self.op = stage.op
        self.lane: Lane = stage.op.lane()
        self.measured = meter
        # A direct step's call is awaited in the worker's own frame.
        lane = self.lane
        self.direct = lane if isinstance(lane, StepLane) and lane.direct else None
        self.capacity = window
        self.slots: Slots | None = None
        if stage.concurrency or self.direct is None:
            self.slots = Slots(stage.name, stage.concurrency or window, capacity=window)

    def direct_call(self) -> tuple[StepFn, Slots, str]:
        """The direct step's function, slots and name.

        A stage that is not one direct step returns its lane, an unused one-slot
        ``Slots`` and its own name, so every entry of the worker's plan has one
        shape; the worker reads them only when ``direct`` is set.
        """
        if self.direct is not None:
            return self.direct.fn, self.direct.slots, self.direct.step
        return self.lane, Slots(self.name, 1, 1), self.name

    def statistics(self) -> ChannelStatistics:
        # Waiting for a step's slot inside the stage, plus waiting to enter it.
        buffered = sum(_buffered(op) for op in self.op.walk())
        slots = self.slots
        if slots is None:
            assert self.direct is not None
            slots = self.direct.slots  # counted in buffered already
        else:
            buffered += slots.buffered
        return ChannelStatistics(
            buffered=buffered,
            capacity=self.capacity,
            inside=slots.running,
            peak_buffered=slots.peak_buffered,
            peak_inside=slots.peak_running,
        )


def _buffered(op: Operator) -> int:
    return int(getattr(op.statistics(), "buffered", 0)) if op.kind == "map_async" else 0


class _LaneRun:
    """Runs consecutive ``stages`` (all with lanes) for the events pushed into it."""

    def __init__(
        self,
        stages: Sequence[Stage],
        window: int,
        hooks: StageHooks,
        deliver: Callable[[Event], None],
        fail: Callable[[Exception], None],
        completed: Callable[[], None],
    ) -> None:
        meter = hooks.meter
        self.stages = [
            _LaneStage(stage, window, meter(stage.name) if meter is not None else None)
            for stage in stages
        ]
        self.deliver = deliver
        self.fail = fail
        self.completed = completed
        self.loop = asyncio.get_running_loop()
        self.window = window
        self.queue: deque[Event] = deque()
        self.idle: list[asyncio.Future[None]] = []
        self.workers: set[asyncio.Task[None]] = set()
        self.inside = 0
        self.finished = False
        self.failed = False
        self.done = False
        self.dispatching = False
        self.disposed = False

    def statistics(self, stage: str) -> ChannelStatistics | None:
        """The bounded-buffer statistics of ``stage``, as a gate reports them."""
        for lane_stage in self.stages:
            if lane_stage.name == stage:
                return lane_stage.statistics()
        return None

    def push(self, event: Event) -> None:
        """Start ``event`` on its way (the caller holds its credit)."""
        self.queue.append(event)
        if not self.dispatching:
            self.dispatching = True
            self.loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        # Once per loop turn rather than per event: workers that finish an event
        # before this runs take the next one from the queue without being woken,
        # which saves a loop wake-up for most events (~8% of W0's CPU per event).
        self.dispatching = False
        if self.disposed:
            return
        queue, idle = self.queue, self.idle
        waiting = len(queue)
        while waiting and idle:
            idle.pop().set_result(None)
            waiting -= 1
        while waiting and len(self.workers) < self.window:
            self.workers.add(self.loop.create_task(self._work()))
            waiting -= 1

    async def _work(self) -> None:
        # A long-lived worker per event in flight (up to the window) rather than a
        # task per event: a task costs more to make and to finish than its wake-up.
        queue = self.queue
        idle = self.idle
        perf = time.perf_counter
        wall = time.time
        # Per stage, what the loop needs, read once rather than per event: the
        # direct step's function, slots and name are attribute loads otherwise.
        plan = [
            (s.name, s.slots, s.lane, s.direct, s.measured, *s.direct_call()) for s in self.stages
        ]
        place = StagePlace()
        current_stage.follow(place)
        while True:
            while not queue:
                if self.finished and not self.inside:
                    self._complete()
                wake = self.loop.create_future()
                idle.append(wake)
                await wake
            event = queue.popleft()
            entered = event
            self.inside += 1
            try:
                for name, slots, lane, direct, measured, fn, step_slots, step in plan:
                    if slots is not None and not slots.try_take():
                        await slots.wait()
                    # Model calls in the step see their stage.
                    place.stage = name
                    try:
                        fields = event.__dict__
                        if fields["outcome"] != "ok":
                            # Inactive events skip steps (a tap still sees them).
                            if direct is None:
                                event = await lane(event)
                            continue
                        first = len(fields["trace"])
                        if direct is None:
                            t0 = perf()
                            event = await lane(event)
                            end = perf()
                        else:
                            # What awaiting the lane does, without its coroutine. The
                            # step's clock starts with the stage's unless its slot waits.
                            t0 = s0 = perf()
                            if not step_slots.try_take():
                                await step_slots.wait()
                                s0 = perf()
                            try:
                                started = wall()
                                try:
                                    result = await fn(event)
                                except Exception as exc:
                                    end = perf()
                                    event = direct.failed(event, exc, started, end - s0)
                                else:
                                    end = perf()
                                    if isinstance(result, Event):
                                        # StepLane.done's common case, one call fewer.
                                        event = with_record(event, result, step, started, end - s0)
                                    else:
                                        event = direct.done(event, result, started, end - s0)
                            finally:
                                step_slots.release()
                        if measured is not None:
                            measured(event, end - t0, first)
                    finally:
                        if slots is not None:
                            slots.release()
                self.deliver(event)
            except Exception as error:
                if not self.failed:
                    self.failed = True
                    self.fail(error)
            except BaseException:
                # Cancelled at shutdown: the runtime writes the event as it entered,
                # so it takes the trace of where the event got to (the steps done,
                # the model calls billed on the way).
                if event is not entered:
                    entered.__dict__["trace"] = event.__dict__["trace"]
                raise
            finally:
                self.inside -= 1

    def _complete(self) -> None:
        if not self.done and not self.failed:
            self.done = True
            self.completed()

    def finish(self) -> None:
        """No more events will come; call ``completed`` once the last one is out."""
        self.finished = True
        if not self.inside and not self.queue:
            self._complete()

    async def dispose(self) -> None:
        """Cancel whatever is still inside and let it unwind (bounded)."""
        self.disposed = True
        tasks = list(self.workers)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(tasks, timeout=CANCEL_WAIT)


class _RxStage:
    """A stage whose operator is a user's own reactivex operator, behind its gate.

    The gate bounds the events inside (the stage's concurrency, else the
    window) and buffered before it (the window); each active event is timed
    from entering the gate's inner operator to leaving it, and measured as a
    lane stage measures it.
    """

    def __init__(
        self,
        stage: Stage,
        window: int,
        hooks: StageHooks,
        deliver: Callable[[Event], None],
        fail: Callable[[Exception], None],
        completed: Callable[[], None],
    ) -> None:
        self.name = stage.name
        measured = hooks.meter(stage.name) if hooks.meter is not None else None
        perf = time.perf_counter

        def on_enter(event: Event) -> None:
            private = event.__pydantic_private__
            private["_entered"] = (perf(), len(event.trace)) if event.outcome == "ok" else None  # type: ignore[index]

        def on_exit(event: Event) -> None:
            private = event.__pydantic_private__
            entered = private.get("_entered") if private is not None else None
            if entered is not None and measured is not None:
                measured(event, perf() - entered[0], entered[1])

        # Events inside the stage, by their ticket (a user's operator may copy them):
        # when the operator errors, those are abandoned because of that error.
        self.inside: set[int] = set()
        self.broken: tuple[Exception, frozenset[int]] | None = None

        def on_deliver(event: Event) -> None:
            self.inside.discard(id(ticket_of(event)))
            deliver(event)

        def on_error(error: Exception) -> None:
            if self.broken is None:
                self.broken = (error, frozenset(self.inside))
            fail(error)

        self.gate = gate(
            stage.op,
            concurrency=stage.concurrency or window,
            capacity=window,
            name=stage.name,
            on_enter=on_enter,
            on_exit=on_exit,
        )
        self.entry = Relay()
        loop = asyncio.get_running_loop()
        self.subscription = self.gate(self.entry).subscribe(
            on_deliver, on_error, completed, scheduler=AsyncIOScheduler(loop)
        )

    def push(self, event: Event) -> None:
        ticket = ticket_of(event)
        if ticket is not None:
            self.inside.add(id(ticket))
        self.entry.on_next(event)

    def failure(self, event: Event) -> Exception | None:
        """The operator's error, if ``event`` was inside the stage when it raised."""
        ticket = ticket_of(event)
        if self.broken is None or ticket is None or id(ticket) not in self.broken[1]:
            return None
        return self.broken[0]

    def statistics(self, stage: str) -> ChannelStatistics | None:
        if stage != self.name:
            return None
        stats = self.gate.statistics()
        return stats if isinstance(stats, ChannelStatistics) else None

    def finish(self) -> None:
        self.entry.on_completed()

    async def dispose(self) -> None:
        self.subscription.dispose()


class LaneEngine:
    """Runs ``stages`` for the events pushed into it: per event, stage by stage.

    Consecutive stages with per-event forms run as one segment (one
    coroutine per event through all of them); a stage with a user's own
    reactivex operator is a segment of its own on the observable path. Each
    segment hands what leaves it to the next, and finishes the next once it
    is empty.

    Args:
        stages: the stages, in flow order.
        window: the credit window; it bounds every stage that sets no concurrency.
        hooks: how each stage's events are measured.
        deliver: called with each event that leaves the last stage.
        fail: called once with an error that must stop the run.
        completed: called when :meth:`finish` was called and nothing is left inside.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        window: int,
        hooks: StageHooks,
        deliver: Callable[[Event], None],
        fail: Callable[[Exception], None],
        completed: Callable[[], None],
    ) -> None:
        groups: list[list[Stage]] = []
        for stage in stages:
            if stage.op.lane is not None and groups and groups[-1][0].op.lane is not None:
                groups[-1].append(stage)
            else:
                groups.append([stage])
        self.segments: list[_LaneRun | _RxStage] = []
        # Built from the last segment back, so each knows where its events go next.
        for group in reversed(groups):
            onward: Callable[[Event], None]
            done: Callable[[], None]
            if self.segments:
                after = self.segments[0]
                onward, done = after.push, after.finish
            else:
                onward, done = deliver, completed
            segment: _LaneRun | _RxStage
            if group[0].op.lane is None:
                segment = _RxStage(group[0], window, hooks, onward, fail, done)
            else:
                segment = _LaneRun(group, window, hooks, onward, fail, done)
            self.segments.insert(0, segment)
        self.push: Callable[[Event], None] = self.segments[0].push

    def statistics(self, stage: str) -> ChannelStatistics | None:
        """The bounded-buffer statistics of ``stage``, as a gate reports them."""
        for segment in self.segments:
            stats = segment.statistics(stage)
            if stats is not None:
                return stats
        raise KeyError(stage)

    def finish(self) -> None:
        """No more events will come; call ``completed`` once the last one is out."""
        self.segments[0].finish()

    def abandoned(self, event: Event) -> Event:
        """``event`` as it is abandoned: failed in a stage whose reactivex operator raised.

        A reactivex stream cannot go on after ``on_error``, so the run stops; the
        events inside that stage carry the operator's error and the stage's name
        (their dead letters say why). Any other event is returned as it is.
        """
        for segment in self.segments:
            if isinstance(segment, _RxStage):
                error = segment.failure(event)
                if error is not None:
                    failed = event.failed(error, segment.name)
                    failed.__pydantic_private__["_failed_in"] = segment.name  # type: ignore[index]
                    return failed
        return event

    async def dispose(self) -> None:
        """Cancel whatever is still inside and let it unwind (bounded)."""
        for segment in self.segments:
            await segment.dispose()
