"""The library API: a running pipeline inside an application that already runs asyncio.

::

    async with streamflow.open(pipeline) as flow:
        answer = await flow.process(ticket)          # one payload in, its output out
        async for event in flow.stream(tickets):     # many in, each as it finishes
            ...

One run of the pipeline lasts as long as the ``async with`` block. Every
call shares its credit window, so at most ``window`` events are inside at
once; :meth:`Flow.process` waits for credit, or with ``wait=False`` refuses
at once with :class:`~streamflow.errors.FlowFull` (a web service answers 503).
Leaving the block is the end of the input: every event inside finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from streamflow.errors import (
    EventFailed,
    EventFiltered,
    EventParked,
    FlowClosed,
    FlowFull,
    StreamflowError,
)
from streamflow.events import DeadLetter, ErrorInfo, Event
from streamflow.flow import CreditWindow, Ticket
from streamflow.metrics import PipelineMetrics
from streamflow.runtime._pipeline import Pipeline
from streamflow.runtime._report import RunReport
from streamflow.runtime._runner import run_flow
from streamflow.runtime._runtime import Runtime
from streamflow.transports import Emit, Record
from streamflow.transports._objects import next_or_stop, object_record

__all__ = ["Flow", "expect_ok", "open_flow"]

_END = object()


class _Feed:
    """The flow's source: hands on what callers admitted, from inside the run's task.

    Emitting from the run's own task (not the caller's) keeps the steps in
    the run's context: its metrics hooks and its limiters.
    """

    name = "process"

    def __init__(self) -> None:
        # Every entry holds a credit already, so the queue never holds more than the window.
        self.queue: asyncio.Queue[tuple[Record, Ticket] | object] = asyncio.Queue()
        self.window: asyncio.Future[CreditWindow] = asyncio.get_running_loop().create_future()

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        self.window.set_result(window)
        while not stop.is_set():
            next_entry = asyncio.ensure_future(self.queue.get())
            if not await next_or_stop(next_entry, stop):
                return
            entry = next_entry.result()
            if entry is _END:
                return
            assert isinstance(entry, tuple)
            record, ticket = entry
            emit(record, ticket)


class _Answers:
    """The flow's sink: each finished event resolves the future of the call that sent it."""

    def __init__(self) -> None:
        self.waiting: dict[Ticket, asyncio.Future[Event]] = {}

    def _future(self, ticket: object) -> asyncio.Future[Event] | None:
        return self.waiting.pop(ticket, None) if isinstance(ticket, Ticket) else None

    def write(self, event: Event) -> None:
        future = self._future(event._ticket)
        if future is not None and not future.done():
            future.set_result(event)

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        future = self._future(ticket)
        if future is not None and not future.done():
            # The input never became an event; the caller still gets one, failed at decode.
            unread = Event(id=error.event_id or record.origin, payload=record.item)
            future.set_result(unread.failed(error, "decode"))

    def abandon(self, event: Event) -> None:
        future = self._future(event._ticket)
        if future is not None and not future.done():
            future.set_exception(FlowClosed("the flow stopped before the event finished"))

    def close(self, error: BaseException | None) -> None:
        for future in self.waiting.values():
            if not future.done():
                closed = FlowClosed("the flow stopped before the event finished")
                closed.__cause__ = error
                future.set_exception(closed)
        self.waiting.clear()


class Flow:
    """A pipeline running inside the application; make one with :func:`streamflow.open`.

    Attributes:
        pipeline: the pipeline.
        report: the run's report (counts, latencies), once the block is left.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.report: RunReport | None = None
        self._feed = _Feed()
        self._answers = _Answers()
        self._admission = asyncio.Lock()
        self._window: CreditWindow | None = None
        self._closed = False
        self._task: asyncio.Task[RunReport] | None = None
        self._typical_seconds = 0.0

    @property
    def in_flight(self) -> int:
        """Events inside the pipeline now."""
        return self._window.in_use if self._window is not None else 0

    @property
    def window(self) -> int:
        """The most events inside at once."""
        return self._window.size if self._window is not None else self.pipeline.window

    def retry_after(self) -> float:
        """Seconds a refused caller might wait: about how long an event takes, at least 1."""
        return float(max(1, math.ceil(self._typical_seconds)))

    async def process(self, item: Any, *, wait: bool = True) -> Any:
        """Run one payload (or Event) through the pipeline and return its output.

        Args:
            item: a payload (the pipeline's input model or a dict that fits it)
                or an :class:`Event`.
            wait: wait for room in the window (default); False raises
                :class:`~streamflow.errors.FlowFull` at once when the window is full.

        Returns:
            The output payload for a payload, the finished Event for an Event.

        Raises:
            EventFailed: the event was dead-lettered (``exc.dead_letter`` says why).
            EventParked: the event was parked for review (``exc.reason``).
            EventFiltered: a filter took it out of the flow.
            FlowFull: ``wait=False`` and the window is full.
            FlowClosed: the flow is closed, or stopped on a fatal error.
        """
        event = await self._submit(item, wait)
        expect_ok(event)
        return event if isinstance(item, Event) else event.payload

    async def stream(self, items: AsyncIterable[Any]) -> AsyncIterator[Event]:
        """Run every object of ``items`` through the pipeline; yield each finished event.

        Events come out as they finish (not in input order), whatever their
        outcome: check ``event.outcome``, or call :func:`expect_ok` to raise as
        :meth:`process` does. At most the window's worth is read ahead of
        what the loop has taken.

        Args:
            items: payloads or Events.

        Returns:
            An async iterator of finished events.

        Raises:
            FlowClosed: the flow is closed, or stopped on a fatal error.
        """
        room = asyncio.Semaphore(self.window)
        finished: asyncio.Queue[asyncio.Future[Event]] = asyncio.Queue()
        sent = 0

        async def feed() -> None:
            nonlocal sent
            async for item in items:
                await room.acquire()
                sent += 1
                pending = asyncio.ensure_future(self._submit(item, True))
                pending.add_done_callback(finished.put_nowait)

        feeder = asyncio.ensure_future(feed())
        received = 0
        try:
            while not (feeder.done() and received == sent):
                next_done = asyncio.ensure_future(finished.get())
                waiting: set[asyncio.Future[Any]] = {next_done}
                if not feeder.done():
                    waiting.add(feeder)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not next_done.done():
                    next_done.cancel()
                    feeder.result()  # the input raised: so does the stream
                    continue
                received += 1
                room.release()
                yield next_done.result().result()
            feeder.result()
        finally:
            feeder.cancel()

    async def _submit(self, item: Any, wait: bool) -> Event:
        window = await self._started()
        if self._closed:
            raise FlowClosed(f"flow of pipeline {self.pipeline.name!r} is closed")
        # The window serves one waiter at a time: callers queue on the lock, in order.
        if window.available < 1 or self._admission.locked():
            if not wait:
                raise FlowFull(
                    f"pipeline {self.pipeline.name!r} has {window.size} events in flight",
                    retry_after=self.retry_after(),
                )
            async with self._admission:
                while window.available < 1:
                    if self._closed:
                        raise FlowClosed(f"flow of pipeline {self.pipeline.name!r} is closed")
                    await window.wait()
                window.take()
        else:
            window.take()
        ticket = Ticket(window)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._answers.waiting[ticket] = future
        self._feed.queue.put_nowait((object_record(item, self._feed.name), ticket))
        started = asyncio.get_running_loop().time()
        event = await future
        # A moving average of how long an event takes, for Retry-After hints.
        took = asyncio.get_running_loop().time() - started
        self._typical_seconds += (took - self._typical_seconds) * 0.1
        return event

    async def _started(self) -> CreditWindow:
        if self._window is None:
            started = self._feed.window
            if not started.done():
                # Shielded: a flow that ends before it started cancels this future,
                # which must not read as the caller being cancelled.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(started)
            if started.cancelled():
                raise FlowClosed(f"flow of pipeline {self.pipeline.name!r} is closed")
            self._window = started.result()
        return self._window


def expect_ok(event: Event) -> Event:
    """Return ``event`` if it finished ``ok``; else raise what :meth:`Flow.process` raises.

    Args:
        event: a finished event (from :meth:`Flow.stream`, say).

    Returns:
        The event, when its outcome is ``ok``.

    Raises:
        EventFailed: the event was dead-lettered.
        EventParked: the event was parked for review.
        EventFiltered: a filter took it out of the flow.
    """
    if event.outcome == "ok":
        return event
    if event.outcome == "review":
        raise EventParked(
            f"event {event.id} was parked for review: {event.reason}",
            event=event,
            reason=event.reason,
        )
    if event.outcome == "filtered":
        raise EventFiltered(f"event {event.id} was filtered out", event=event)
    error = event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
    failing = event._failed_in or error.step
    letter = DeadLetter.of(event)
    raise EventFailed(
        f"event {event.id} failed in {failing}: {error.type}: {error.message}",
        dead_letter=letter,
        event=event,
    )


@contextlib.asynccontextmanager
async def open_flow(
    pipeline: Pipeline,
    *,
    window: int | None = None,
    metrics: PipelineMetrics | None = None,
    runtime: Runtime | None = None,
) -> AsyncIterator[Flow]:
    """Run ``pipeline`` for the length of the block; call it through the :class:`Flow`.

    Leaving the block ends the input: the events inside finish first. When
    the block is left by an exception (or the task is cancelled), the events
    inside are abandoned instead and their callers get
    :class:`~streamflow.errors.FlowClosed`.

    Args:
        pipeline: the pipeline to run (every stage, in this process).
        window: the most events inside at once (default: the pipeline's).
        metrics: Prometheus collectors to update, if any.
        runtime: what the flow shares with other runs (limiters); default: its
            own, which leaves the host's garbage collector alone.

    Returns:
        An async context manager yielding the running :class:`Flow`.

    Raises:
        FlowClosed: from calls after the block, or after a fatal error stopped the run.
    """
    flow = Flow(pipeline)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_flow(
            pipeline,
            flow._feed,
            flow._answers,
            window=window,
            metrics=metrics,
            stop=stop,
            runtime=runtime,
            # Only a block left by an exception sets stop: then nothing waits.
            drain_timeout=0.0,
        )
    )
    flow._task = task
    # A fatal error or an early end wakes callers that wait for credit or for the start.
    task.add_done_callback(functools.partial(_closed, flow))
    try:
        await asyncio.wait((task, flow._feed.window), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield flow
    except BaseException:
        stop.set()
        flow._closed = True
        flow._feed.queue.put_nowait(_END)
        with contextlib.suppress(BaseException):
            flow.report = await asyncio.shield(task)
        raise
    flow._closed = True
    flow._feed.queue.put_nowait(_END)
    flow.report = await task
    if flow.report.error is not None:
        raise FlowClosed(f"flow of pipeline {pipeline.name!r} stopped") from flow.report.error


def _closed(flow: Flow, task: asyncio.Task[RunReport]) -> None:
    flow._closed = True
    error: BaseException | None = None
    if not task.cancelled():
        error = task.exception() or task.result().error
    if flow._window is not None:
        flow._window.wake()
    if not flow._feed.window.done():
        flow._feed.window.cancel()
    flow._answers.close(error)
