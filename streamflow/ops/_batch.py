"""batch_async: micro-batch events for steps that take batches (embeddings)."""

from __future__ import annotations

import asyncio
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streamflow.errors import ConfigError, StepFailed
from streamflow.events import Event, StepRecord
from streamflow.ops._adapter import per_event
from streamflow.ops._hinted import argument_for
from streamflow.ops._operator import Lane, Operator
from streamflow.ops._retry import RetryPolicy, retry_call
from streamflow.ops._typed import _hints, _plain

__all__ = ["BatchStatistics", "batch_async"]

BatchFn = Callable[[list[Event]], Awaitable[Sequence[Event]]]


@dataclass(frozen=True)
class BatchStatistics:
    """A snapshot of one batch_async operator (summed over its runs).

    Attributes:
        buffered: events collected for the next batch.
        running: batches in flight.
        batches: batches sent so far.
        largest: the largest batch sent.
    """

    buffered: int
    running: int
    batches: int
    largest: int


def batch_async(
    fn: BatchFn,
    *,
    max_size: int = 32,
    max_wait: float = 0.05,
    concurrency: int = 1,
    retry: RetryPolicy | None = None,
    name: str | None = None,
) -> Operator:
    """Collect active events into batches and run ``fn`` once per batch.

    ::

        in:    -a-b-c-d-e------|     (max_size=2, max_wait=3 ticks)
        out:   ---AB--CD----E--|     E flushed by the timer

    A batch goes out when it holds ``max_size`` events or ``max_wait`` seconds
    after its first event arrived (the end of the input does not cut the
    wait short). Each event's per-event call joins the run's batcher and
    awaits its own result, so the runtime awaits it like any step. ``fn``
    returns one event per input, in the same order. When ``fn`` fails for
    good, every event of the batch fails with the error (dead letters); the
    stream goes on.

    Like a step, ``fn`` may take the payloads instead of the events: when
    its parameter's hint is ``list[Ticket]`` (any type but Event) it gets the
    payloads (a dict becomes the model first; one that does not fit fails
    that event alone) and returns one payload per input.

    Args:
        fn: async ``list[Event] -> list[Event]``, or of payloads as its hint says.
        max_size: most events per batch.
        max_wait: longest wait for a batch to fill, in seconds.
        concurrency: batches in flight at once.
        retry: retry policy for a failing batch.
        name: the step name in traces.

    Returns:
        The operator.

    Raises:
        ConfigError: on non-positive sizes or waits.
        TopologyError: ``fn``'s hint cannot be resolved.
    """
    if max_size < 1 or concurrency < 1:
        raise ConfigError("batch_async: max_size and concurrency must be >= 1")
    if max_wait <= 0:
        raise ConfigError("batch_async: max_wait must be > 0 seconds")
    step: str = name or str(getattr(fn, "__name__", "batch"))
    batchers: list[_Batcher] = []
    item = _item_argument(fn, step)
    events_fn = fn if item is None else _of_payloads(fn, step)

    def lane() -> Lane:
        batcher = _Batcher(events_fn, step, max_size, max_wait, concurrency, retry)
        batchers.append(batcher)
        if item is None:
            return batcher.call

        async def call(event: Event) -> Event:
            # Each payload becomes the type fn takes before it joins: a misfit fails alone.
            if not event.active:
                return event
            try:
                payload = item(event)
            except StepFailed as exc:
                return event.failed(exc, step)
            return await batcher.call(event.with_payload(payload))

        return call

    def stats() -> BatchStatistics:
        return BatchStatistics(
            buffered=sum(b.buffered for b in batchers),
            running=sum(len(b.tasks) for b in batchers),
            batches=sum(b.batches for b in batchers),
            largest=max((b.largest for b in batchers), default=0),
        )

    return per_event(
        lane,
        name=step,
        kind="batch_async",
        ordering="input" if concurrency == 1 else "unordered",
        stats=stats,
    )


class _Batcher:
    """The batches of one run: every event's call joins one and awaits its own result.

    A batch goes out when it holds ``max_size`` events or ``max_wait``
    seconds after its first event joined; at most ``concurrency`` batches run
    at once, the others wait their turn in order.
    """

    def __init__(
        self,
        fn: BatchFn,
        step: str,
        max_size: int,
        max_wait: float,
        concurrency: int,
        retry: RetryPolicy | None,
    ) -> None:
        self.fn = fn
        self.step = step
        self.max_size = max_size
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.retry = retry
        self.current: list[tuple[Event, asyncio.Future[Event]]] = []
        self.ready: deque[list[tuple[Event, asyncio.Future[Event]]]] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.buffered = 0
        self.batches = 0
        self.largest = 0

    async def call(self, event: Event) -> Event:
        """Join the next batch with ``event`` and return its result."""
        if not event.active:
            return event
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Event] = loop.create_future()
        self.current.append((event, result))
        self.buffered += 1
        if len(self.current) >= self.max_size:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.max_wait, self._flush)
        return await result

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.current:
            self.ready.append(self.current)
            self.current = []
        self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        while self.ready and len(self.tasks) < self.concurrency:
            batch = self.ready.popleft()
            self.batches += 1
            self.largest = max(self.largest, len(batch))
            task = loop.create_task(self._run(batch))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    async def _run(self, batch: list[tuple[Event, asyncio.Future[Event]]]) -> None:
        try:
            results = await _run_batch(self.fn, [e for e, _ in batch], self.step, self.retry)
        except Exception as exc:
            # Not the events' failure (those come back as failed events): stop the run.
            self.buffered -= len(batch)
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for (_, waiter), result in zip(batch, results, strict=True):
            self.buffered -= 1
            # A call cancelled meanwhile (shutdown) no longer wants its result.
            if not waiter.done():
                waiter.set_result(result)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            self._start()


async def _run_batch(
    fn: BatchFn, batch: list[Event], step: str, retry: RetryPolicy | None
) -> list[Event]:
    loop = asyncio.get_running_loop()
    # The latest attempt's wall-clock start and, for durations, its loop-clock start
    # (the clock max_wait is measured on).
    started, t0 = time.time(), loop.time()

    async def attempt() -> list[Event]:
        nonlocal started, t0
        started, t0 = time.time(), loop.time()
        results = list(await fn(batch))
        if len(results) != len(batch):
            raise StepFailed(
                f"batch step '{step}' returned {len(results)} events for {len(batch)}",
                stage=step,
            )
        return results

    tried = await retry_call(attempt, retry)
    if tried.error is not None:
        failed = _record(step, started, t0, tried.attempts, "failed")
        return [
            event.failed(tried.error, step, failed).evolve(attempts=event.attempts + tried.attempts)
            for event in batch
        ]
    results = tried.unwrap()
    record = _record(step, started, t0, tried.attempts, "ok", detail=f"batch of {len(batch)}")
    return [
        result.model_copy(
            update={"trace": [*result.trace, record], "attempts": before.attempts + tried.attempts}
        )
        if result.active
        else result
        for before, result in zip(batch, results, strict=True)
    ]


def _record(
    step: str, started: float, t0: float, attempt: int, outcome: str, detail: str | None = None
) -> StepRecord:
    duration = asyncio.get_running_loop().time() - t0
    return StepRecord.timed(step, started, duration, attempt, outcome, detail)


def _item_argument(fn: Callable[..., Any], step: str) -> Callable[[Event], Any] | None:
    """None when ``fn`` takes events; else what turns an event into one item of its list."""
    # The hint of the list parameter names the item: list[Ticket] -> Ticket.
    args = typing.get_args(_hints(fn, step)[0])
    item = _plain(args[0]) if args else None
    if item is None or issubclass(item, Event):
        return None
    return argument_for(item, step)


def _of_payloads(fn: Callable[..., Any], step: str) -> BatchFn:
    """``fn`` of payloads as a function of events: results go back into the events."""

    async def of_events(events: list[Event]) -> Sequence[Event]:
        results = list(await fn([event.payload for event in events]))
        if len(results) != len(events):
            raise StepFailed(
                f"batch step '{step}' returned {len(results)} results for {len(events)}",
                stage=step,
            )
        return [event.with_payload(result) for event, result in zip(events, results, strict=True)]

    return of_events
