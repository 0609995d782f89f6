"""batch_async: micro-batch events for steps that take batches (embeddings)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from streamflow.errors import ConfigError, StepFailed
from streamflow.events import Event, StepRecord
from streamflow.ops._operator import Operator
from streamflow.ops._retry import RetryPolicy

__all__ = ["BatchStatistics", "batch_async"]

BatchFn = Callable[[list[Event]], Awaitable[Sequence[Event]]]


@dataclass(frozen=True)
class BatchStatistics:
    """A snapshot of one batch_async operator.

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
    after its first event arrived. ``fn`` returns one event per input, in the
    same order. When ``fn`` fails for good, every event of the batch fails
    with the error (dead letters); the stream goes on.

    Args:
        fn: async ``list[Event] -> list[Event]``.
        max_size: most events per batch.
        max_wait: longest wait for a batch to fill, in seconds.
        concurrency: batches in flight at once.
        retry: retry policy for a failing batch.
        name: the step name in traces.

    Raises:
        ConfigError: on non-positive sizes or waits.
    """
    if max_size < 1 or concurrency < 1:
        raise ConfigError("batch_async: max_size and concurrency must be >= 1")
    if max_wait <= 0:
        raise ConfigError("batch_async: max_wait must be > 0 seconds")
    step: str = name or str(getattr(fn, "__name__", "batch"))
    counters = {"batches": 0, "largest": 0, "buffered": 0, "running": 0}

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            loop = asyncio.get_running_loop()
            current: list[Event] = []
            ready: list[list[Event]] = []
            tasks: set[asyncio.Task[list[Event]]] = set()
            timer: asyncio.TimerHandle | None = None
            upstream_done = False
            stopped = False

            def flush() -> None:
                nonlocal current, timer
                if timer is not None:
                    timer.cancel()
                    timer = None
                if current:
                    ready.append(current)
                    current = []
                start()

            def start() -> None:
                while ready and len(tasks) < concurrency:
                    batch = ready.pop(0)
                    counters["batches"] += 1
                    counters["largest"] = max(counters["largest"], len(batch))
                    task = loop.create_task(_run_batch(fn, batch, step, retry))
                    tasks.add(task)
                    counters["running"] = len(tasks)
                    task.add_done_callback(done)

            def done(task: asyncio.Task[list[Event]]) -> None:
                tasks.discard(task)
                counters["running"] = len(tasks)
                if stopped or task.cancelled():
                    return
                for event in task.result():
                    counters["buffered"] -= 1
                    observer.on_next(event)
                start()
                maybe_complete()

            def maybe_complete() -> None:
                if upstream_done and not current and not ready and not tasks and not stopped:
                    observer.on_completed()

            def on_next(event: Event) -> None:
                nonlocal timer
                if not event.active:
                    observer.on_next(event)
                    return
                counters["buffered"] += 1
                current.append(event)
                if len(current) >= max_size:
                    flush()
                elif timer is None:
                    timer = loop.call_later(max_wait, flush)

            def on_completed() -> None:
                nonlocal upstream_done
                upstream_done = True
                flush()
                maybe_complete()

            def on_error(error: Exception) -> None:
                dispose()
                observer.on_error(error)

            def dispose() -> None:
                nonlocal stopped
                stopped = True
                if timer is not None:
                    timer.cancel()
                for task in list(tasks):
                    task.cancel()

            upstream = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return CompositeDisposable(upstream, Disposable(dispose))

        return reactivex.create(subscribe)

    return Operator(
        fn=operator,
        name=step,
        kind="batch_async",
        ordering="input" if concurrency == 1 else "unordered",
        stats=lambda: BatchStatistics(
            counters["buffered"], counters["running"], counters["batches"], counters["largest"]
        ),
    )


async def _run_batch(
    fn: BatchFn, batch: list[Event], step: str, retry: RetryPolicy | None
) -> list[Event]:
    attempt = 0
    while True:
        attempt += 1
        started = time.time()
        # Durations use the loop clock, the clock max_wait is measured on.
        t0 = asyncio.get_running_loop().time()
        try:
            results = list(await fn(batch))
            if len(results) != len(batch):
                raise StepFailed(
                    f"batch step '{step}' returned {len(results)} events for {len(batch)}",
                    stage=step,
                )
        except Exception as exc:
            if retry is not None and retry.should_retry(exc, attempt):
                await asyncio.sleep(retry.delay(attempt, getattr(exc, "retry_after", None)))
                continue
            return [
                event.failed(exc, step, _record(step, started, t0, attempt, "failed")).evolve(
                    attempts=event.attempts + attempt
                )
                for event in batch
            ]
        record = _record(step, started, t0, attempt, "ok", detail=f"batch of {len(batch)}")
        return [
            result.model_copy(
                update={"trace": [*result.trace, record], "attempts": before.attempts + attempt}
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
