"""The lane engine: each event runs through the stages in one coroutine.

Every streamflow operator maps one event to one event, so a stage whose
operator has a per-event form (:attr:`Operator.lane`) needs no stream
plumbing in one process: a worker takes an event and awaits each stage's
lane in turn, under the same bounds (a stage's concurrency, each step's
slots). A hop through the stream costs several observer calls and a worker
hand-off per step; a lane costs one await.

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

from streamflow.events import Event
from streamflow.ops import (
    ChannelStatistics,
    Lane,
    Operator,
    Slots,
    StagePlace,
    StepLane,
    current_stage,
)
from streamflow.runtime._pipeline import Stage, StageHooks

__all__ = ["LaneEngine", "has_lanes"]

CANCEL_WAIT = 1.0
"""Seconds to let cancelled events unwind when the engine is disposed."""


def has_lanes(stages: Sequence[Stage]) -> bool:
    """True when every stage's operator can run per event."""
    return all(stage.op.lane is not None for stage in stages)


class _LaneStage:
    """One stage: its lane and the slots that bound and count the events inside it.

    A stage without a concurrency of its own is bounded by the window, which
    the source enforces already, so its slots never make an event wait. When
    such a stage is one direct step, the step's slots are the stage's: they
    count the same events, and sparing the second pair saves two calls per
    event and stage.
    """

    def __init__(self, stage: Stage, window: int, hooks: StageHooks) -> None:
        assert stage.op.lane is not None
        self.name = stage.name
        self.op = stage.op
        self.lane: Lane = stage.op.lane()
        self.measured = hooks.meter(stage.name) if hooks.meter is not None else None
        # A direct step's call is awaited in the worker's own frame.
        lane = self.lane
        self.direct = lane if isinstance(lane, StepLane) and lane.direct else None
        self.capacity = window
        self.slots: Slots | None = None
        if stage.concurrency or self.direct is None:
            self.slots = Slots(stage.name, stage.concurrency or window, capacity=window)

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


class LaneEngine:
    """Runs ``stages`` (all with lanes) for the events pushed into it.

    Args:
        stages: the stages, in flow order.
        window: the credit window; it bounds every stage that sets no concurrency.
        hooks: called as each event enters and leaves each stage.
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
        self.stages = [_LaneStage(stage, window, hooks) for stage in stages]
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

    def statistics(self, stage: str) -> ChannelStatistics:
        """The bounded-buffer statistics of ``stage``, as a gate reports them."""
        for lane_stage in self.stages:
            if lane_stage.name == stage:
                return lane_stage.statistics()
        raise KeyError(stage)

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
        plan = [(s.name, s.slots, s.lane, s.direct, s.measured) for s in self.stages]
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
            self.inside += 1
            try:
                for name, slots, lane, direct, measured in plan:
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
                            step_slots = direct.slots
                            t0 = s0 = perf()
                            if not step_slots.try_take():
                                await step_slots.wait()
                                s0 = perf()
                            try:
                                started = wall()
                                try:
                                    result = await direct.fn(event)
                                except Exception as exc:
                                    end = perf()
                                    event = direct.failed(event, exc, started, end - s0)
                                else:
                                    end = perf()
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
