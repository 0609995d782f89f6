"""map_async: run an async step per event with bounded concurrency.

Built on asyncio tasks, a deque and counters rather than RxPY's
flat_map/merge, which cost far more per event and do not bound eager work.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from streamflow.errors import CapacityExceeded, ConfigError, StepFailed, StepTimeout
from streamflow.events import Event, StepRecord
from streamflow.flow._adaptive import AdaptiveConcurrency
from streamflow.flow._slots import Slots
from streamflow.ops._limiter import Limiter, Permit
from streamflow.ops._operator import Lane, Operator, Ordering
from streamflow.ops._retry import RetryPolicy

__all__ = ["MapStatistics", "StepFn", "StepLane", "map_async", "run_step"]

StepFn = Callable[[Event], Awaitable[Event]]
TokenEstimate = Callable[[Event], int]

DEFAULT_CAPACITY = 4096


@dataclass(frozen=True)
class MapStatistics:
    """A snapshot of one map_async subscription.

    Attributes:
        running: calls in flight now.
        buffered: events waiting for a free slot (or for their key).
        peak_running: the most calls ever in flight at once.
        peak_buffered: the most events ever waiting.
        capacity: the bound on waiting events.
    """

    running: int
    buffered: int
    peak_running: int
    peak_buffered: int
    capacity: int


def map_async(
    fn: StepFn,
    *,
    concurrency: int | AdaptiveConcurrency = 16,
    ordered: bool | Literal["key"] = False,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    name: str | None = None,
    capacity: int = DEFAULT_CAPACITY,
    limiter: Limiter | None = None,
    tokens: TokenEstimate | None = None,
) -> Operator:
    """Run ``fn`` on each active event, at most ``concurrency`` calls at once.

    ::

        in:   --a--b--c--|            (concurrency=2, b slow)
        fn:     [a]  [b......]
                        [c]
        out:  ----a-----c----b--|     ordered=False
        out:  ----a----------b-c|     ordered=True

    Events that are not active (failed, filtered, parked for review) pass
    through without a call. A call that raises is retried per ``retry`` (with
    backoff, honouring a ``retry_after`` hint on the error); after the last
    attempt the event leaves as a failed event carrying its error, attempts and
    step, headed for the dead letters. One failing event never ends the stream.

    Args:
        fn: the async step, ``Event -> Event``.
        concurrency: most calls in flight at once, or an
            :class:`AdaptiveConcurrency` whose current limit is read each time
            a call starts and which learns from each attempt's latency and 429s.
        ordered: False emits in completion order; True keeps input order;
            ``"key"`` runs one call per key at a time and keeps per-key order.
        timeout: seconds per call; a late call is cancelled (StepTimeout, retriable).
        retry: the retry policy; None means one attempt.
        name: the step name in traces and metrics (default: ``fn``'s name).
        capacity: bound on events waiting for a slot; exceeding it is a bug
            upstream (no credit) and raises CapacityExceeded.
        limiter: a rate limiter every attempt waits on inside its slot, before
            ``fn`` runs (so retries are charged too); the charge is settled with
            ``tokens_in + tokens_out`` of the record ``fn`` writes, if it writes one.
        tokens: the token estimate of an event for ``limiter`` (default 0).

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.

    Raises:
        ConfigError: on a non-positive concurrency, timeout or capacity, or
            ``tokens`` without a ``limiter``.
    """
    adaptive = concurrency if isinstance(concurrency, AdaptiveConcurrency) else None
    most = concurrency if isinstance(concurrency, int) else concurrency.max
    if tokens is not None and limiter is None:
        raise ConfigError("map_async: tokens= estimates are for a limiter; give limiter= too")
    if most < 1:
        raise ConfigError(f"map_async: concurrency must be >= 1, got {most}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"map_async: timeout must be > 0 seconds, got {timeout}")
    if capacity < 1:
        raise ConfigError(f"map_async: capacity must be >= 1, got {capacity}")
    if ordered not in (False, True, "key"):
        raise ConfigError(f"map_async: ordered must be False, True or 'key', got {ordered!r}")
    step: str = name or str(getattr(fn, "__name__", "step"))
    mode: Ordering = "input" if ordered is True else "key" if ordered == "key" else "unordered"
    states: list[_MapState | Slots] = []

    def lane() -> Lane:
        slots = Slots(step, most, capacity, adaptive)
        states.append(slots)
        options: dict[str, Any] = {"step": step, "timeout": timeout, "retry": retry}
        if limiter is not None or adaptive is not None:
            options.update(limiter=limiter, tokens=tokens, adaptive=adaptive)
        direct = timeout is None and retry is None and limiter is None and adaptive is None
        return StepLane(fn, step, slots, options, direct=direct)

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state = _MapState(
                fn, step, most, mode, timeout, retry, capacity, observer, limiter, tokens
            )
            state.adaptive = adaptive
            states.append(state)
            upstream = source.subscribe(
                state.on_next, state.on_error, state.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, Disposable(state.dispose))

        return reactivex.create(subscribe)

    op = Operator(
        fn=operator,
        name=step,
        kind="map_async",
        ordering=mode,
        requires=None if mode == "unordered" else mode,
        capacity=capacity,
        stats=lambda: _merge_stats(states, capacity),
        # Ordered modes hold events back for one another, which only the stream form does.
        lane=lane if mode == "unordered" else None,
    )
    return op


class StepLane:
    """map_async's per-event form: ``fn`` on one active event, within the step's slots.

    A step with one attempt and no timeout, limiter or adaptive limit is
    *direct*: its call is ``fn`` framed by synchronous bookkeeping, so a
    runner may take :attr:`slots`, await :attr:`fn` in its own frame and pass
    the result to :meth:`done` (or the exception to :meth:`failed`). That is
    what calling the lane does (through :func:`run_step`), with two coroutines
    fewer per event and step.

    Attributes:
        fn: the step function.
        step: the step name.
        slots: the bound on calls in flight.
        direct: True when ``fn`` may be awaited as above.
    """

    __slots__ = ("direct", "fn", "options", "slots", "step")

    def __init__(
        self, fn: StepFn, step: str, slots: Slots, options: dict[str, Any], *, direct: bool
    ) -> None:
        self.fn = fn
        self.step = step
        self.slots = slots
        self.options = options
        self.direct = direct

    async def __call__(self, event: Event) -> Event:
        if event.outcome != "ok":
            return event
        slots = self.slots
        if not slots.try_take():
            await slots.wait()
        try:
            return await run_step(self.fn, event, **self.options)
        finally:
            slots.release()

    def done(self, event: Event, result: object, started: float, seconds: float) -> Event:
        """The event after a direct call of ``fn`` returned ``result``, with its record."""
        if not isinstance(result, Event):
            return self.failed(event, _not_an_event(self.step, result, event), started, seconds)
        return _with_record(event, result, self.step, started, seconds, 1)

    def failed(self, event: Event, exc: Exception, started: float, seconds: float) -> Event:
        """The event after a direct call of ``fn`` raised ``exc``: failed, with its record."""
        return _failure(event, exc, self.step, started, seconds, 1)


def _merge_stats(states: list[_MapState | Slots], capacity: int) -> MapStatistics:
    return MapStatistics(
        running=sum(s.running for s in states),
        buffered=sum(s.buffered for s in states),
        peak_running=max((s.peak_running for s in states), default=0),
        peak_buffered=max((s.peak_buffered for s in states), default=0),
        capacity=capacity,
    )


async def run_step(
    fn: StepFn,
    event: Event,
    *,
    step: str,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    limiter: Limiter | None = None,
    tokens: TokenEstimate | None = None,
    adaptive: AdaptiveConcurrency | None = None,
) -> Event:
    """Call ``fn`` on ``event`` with timeout and retries; never raises for the event.

    With a ``limiter``, each attempt first waits for it (``tokens`` gives the
    estimate) and settles the charge from the step's own record; with
    ``adaptive``, each attempt reports its latency or error to it.

    Returns:
        The step's result with its trace record, or the event marked failed
        with the last error, its attempts and the step.
    """
    # Durations use the loop clock, the clock timeouts are measured on.
    clock = asyncio.get_running_loop().time
    attempt = 0
    while True:
        attempt += 1
        permit = None
        try:
            if limiter is not None:
                permit = await limiter.acquire(tokens(event) if tokens is not None else 0)
        except Exception as exc:
            # A broken token estimate fails this event, never the stream.
            return event.failed(exc, step).evolve(attempts=event.attempts + attempt)
        started = time.time()
        t0 = clock()
        try:
            if timeout is None:
                result = await fn(event)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        result = await fn(event)
                except TimeoutError as exc:
                    raise StepTimeout(
                        f"step '{step}' took longer than {timeout:g}s and was cancelled",
                        stage=step,
                        event_id=event.id,
                    ) from exc
            if not isinstance(result, Event):
                raise _not_an_event(step, result, event)
        except Exception as exc:
            if adaptive is not None:
                adaptive.on_failure(t0, clock(), exc)
            if retry is not None and retry.should_retry(exc, attempt):
                await asyncio.sleep(retry.delay(attempt, getattr(exc, "retry_after", None)))
                continue
            return _failure(event, exc, step, started, clock() - t0, attempt)
        t1 = clock()
        if adaptive is not None:
            adaptive.on_success(t0, t1)
        if permit is not None:
            _settle(permit, event, result, step)
        return _with_record(event, result, step, started, t1 - t0, attempt)


def _not_an_event(step: str, result: object, event: Event) -> StepFailed:
    return StepFailed(
        f"step '{step}' returned {type(result).__name__}, expected an Event",
        stage=step,
        event_id=event.id,
    )


def _failure(
    event: Event, exc: Exception, step: str, started: float, duration: float, attempt: int
) -> Event:
    record = StepRecord.timed(step, started, duration, attempt, "failed", type(exc).__name__)
    return event.failed(exc, step, record).evolve(attempts=event.attempts + attempt)


def _settle(permit: Permit, before: Event, after: Event, step: str) -> None:
    trace = after.trace
    if len(trace) > len(before.trace) and trace[-1].step == step:
        own = trace[-1]
        permit.settle(own.tokens_in + own.tokens_out)


def _with_record(
    before: Event, after: Event, step: str, started: float, duration: float, attempt: int
) -> Event:
    # A step may write its own record (model, tokens, cost); timing is ours to fill.
    fields = after.__dict__
    trace = fields["trace"]
    if after is not before and len(trace) > len(before.trace) and trace[-1].step == step:
        own = trace[-1].__dict__
        own["started_at"], own["duration_s"], own["attempt"] = started, duration, attempt
    else:
        # The trace list belongs to the event's one path through the flow (fan-out
        # copies it per branch), so the record is appended in place: a copy of
        # the event per step would cost more than the step's own bookkeeping.
        trace.append(StepRecord.timed(step, started, duration, attempt, fields["outcome"]))
    fields["attempts"] = before.__dict__["attempts"] + attempt
    return after


class _MapState:
    """Per-subscription state; lives on the event loop thread."""

    def __init__(
        self,
        fn: StepFn,
        step: str,
        concurrency: int,
        mode: Ordering,
        timeout: float | None,
        retry: RetryPolicy | None,
        capacity: int,
        observer: abc.ObserverBase[Event],
        limiter: Limiter | None = None,
        tokens: TokenEstimate | None = None,
    ) -> None:
        self.fn = fn
        self.step = step
        self.concurrency = concurrency
        self.mode = mode
        self.timeout = timeout
        self.retry = retry
        self.capacity = capacity
        self.observer = observer
        self.limiter = limiter
        self.tokens = tokens
        self.adaptive: AdaptiveConcurrency | None = None
        self.loop = asyncio.get_running_loop()
        self.pending: deque[tuple[int, Event]] = deque()
        self.waiting: dict[str, deque[tuple[int, Event]]] = {}
        self.busy: set[str] = set()
        self.reorder: dict[int, Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.running_workers = 0
        self.idle: list[asyncio.Future[bool]] = []
        self.seq_in = 0
        self.seq_out = 0
        self.running = 0
        self.buffered = 0
        self.peak_running = 0
        self.peak_buffered = 0
        self.upstream_done = False
        self.stopped = False

    def on_next(self, event: Event) -> None:
        if self.stopped:
            return
        seq = self.seq_in
        self.seq_in += 1
        if not event.active:
            self._emit(seq, event)
            return
        if self.buffered >= self.capacity:
            raise CapacityExceeded(
                f"map_async '{self.step}': more than {self.capacity} events waiting; "
                "feed it from a credit-limited source or raise capacity",
                stage=self.step,
            )
        self.pending.append((seq, event))
        self.buffered += 1
        if self.buffered > self.peak_buffered:
            self.peak_buffered = self.buffered
        self._pump()

    def _pump(self) -> None:
        # Long-lived workers pull from the deque, so an event costs no task of
        # its own: an idle worker is woken, or a new one started up to the limit.
        if self.idle:
            self.idle.pop().set_result(True)
            return
        adaptive = self.adaptive
        limit = self.concurrency if adaptive is None else adaptive.limit
        if self.running_workers < limit:
            self._start_worker()

    def _grow(self, limit: int) -> None:
        # The adaptive limit may have risen while events waited: start workers for them.
        missing = min(limit - self.running_workers, len(self.pending) - len(self.idle))
        for _ in range(missing):
            self._start_worker()

    def _start_worker(self) -> None:
        self.running_workers += 1
        task = self.loop.create_task(self._work())
        self.tasks.add(task)
        task.add_done_callback(self._worker_done)

    def _next(self) -> tuple[int, Event] | None:
        pending = self.pending
        while pending:
            seq, event = pending.popleft()
            if self.mode == "key" and event.key is not None:
                if event.key in self.busy:
                    self.waiting.setdefault(event.key, deque()).append((seq, event))
                    continue
                self.busy.add(event.key)
            self.buffered -= 1
            return seq, event
        return None

    async def _work(self) -> None:
        plain = self.limiter is None and self.adaptive is None
        fn, step, timeout, retry = self.fn, self.step, self.timeout, self.retry
        done = 0
        while not self.stopped:
            adaptive = self.adaptive
            if adaptive is not None and self.running >= adaptive.limit:
                return
            item = self._next()
            if item is None:
                if self.upstream_done:
                    return
                # Park until on_next has work; False means the stream is over.
                parked = self.loop.create_future()
                self.idle.append(parked)
                if not await parked:
                    return
                continue
            seq, event = item
            self.running += 1
            if self.running > self.peak_running:
                self.peak_running = self.running
            if plain:
                result = await run_step(fn, event, step=step, timeout=timeout, retry=retry)
            else:
                result = await run_step(
                    fn,
                    event,
                    step=step,
                    timeout=timeout,
                    retry=retry,
                    limiter=self.limiter,
                    tokens=self.tokens,
                    adaptive=adaptive,
                )
            self.running -= 1
            if self.stopped:
                return
            key = event.key
            if self.mode == "key" and key is not None:
                self.busy.discard(key)
                queue = self.waiting.get(key)
                if queue:
                    # The next event of this key goes first, so per-key FIFO holds.
                    self.pending.appendleft(queue.popleft())
                    if not queue:
                        del self.waiting[key]
            self._emit(seq, result)
            self._maybe_complete()
            if adaptive is not None and self.pending:
                self._grow(adaptive.limit)
            done += 1
            if not done % 64 and self.pending:
                # Steps that never suspend would otherwise hold the loop for a
                # whole backlog; give the source and the other stages a turn.
                await asyncio.sleep(0)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.running_workers -= 1
        if self.stopped or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.stopped = True
            self.observer.on_error(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            return
        if self.pending:
            self._pump()
        self._maybe_complete()

    def _release_idle(self) -> None:
        while self.idle:
            parked = self.idle.pop()
            if not parked.done():
                parked.set_result(False)

    def _emit(self, seq: int, event: Event) -> None:
        if self.mode != "input":
            self.observer.on_next(event)
            return
        self.reorder[seq] = event
        while self.seq_out in self.reorder:
            self.observer.on_next(self.reorder.pop(self.seq_out))
            self.seq_out += 1

    def on_error(self, error: Exception) -> None:
        self.dispose()
        self.observer.on_error(error)

    def on_completed(self) -> None:
        self.upstream_done = True
        if not self.pending:
            self._release_idle()
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if (
            self.upstream_done
            and not self.stopped
            and self.running == 0
            and not self.pending
            and not self.waiting
            and not self.reorder
        ):
            self.stopped = True
            self._release_idle()
            self.observer.on_completed()

    def dispose(self) -> None:
        self.stopped = True
        self._release_idle()
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
