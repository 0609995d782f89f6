"""map_async: run an async step per event with bounded concurrency.

Written once, as its per-event form (:class:`StepLane`, wrapped for input
or per-key order); the reactivex form comes from :func:`stream_of`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from streamflow.errors import ConfigError, StepFailed, StepTimeout
from streamflow.events import Event, StepRecord
from streamflow.flow._adaptive import AdaptiveConcurrency
from streamflow.flow._slots import Slots
from streamflow.ops._adapter import DEFAULT_CAPACITY, per_event
from streamflow.ops._limiter import Limiter, Permit
from streamflow.ops._operator import Lane, Operator, Ordering
from streamflow.ops._order import InputOrder, KeyOrder
from streamflow.ops._retry import RetryPolicy, retry_call
from streamflow.ops._typed import event_step, step_types

__all__ = ["MapStatistics", "StepFn", "StepLane", "map_async", "run_step", "with_record"]

StepFn = Callable[[Event], Awaitable[Event]]
TokenEstimate = Callable[[Event], int]


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
    fn: StepFn | Callable[[Any], Any],
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

    A step of the payload (``async def classify(t: Ticket) -> Classified``,
    or a plain ``def``) gets the payload and returns the new one; its trace
    entry is recorded the same way. The first parameter's hint decides: an
    ``Event`` (or no hint) means a step of the envelope.

    Args:
        fn: the step, async or not: ``Event -> Event``, or payload -> payload.
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
        TopologyError: a step of the envelope whose hint says it returns no Event.
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
    types = step_types(fn, step)
    call_fn: StepFn = event_step(fn, step, types)
    mode: Ordering = "input" if ordered is True else "key" if ordered == "key" else "unordered"
    states: list[Slots | InputOrder | KeyOrder] = []

    def lane() -> Lane:
        slots = Slots(step, most, capacity, adaptive)
        options: dict[str, Any] = {"step": step, "timeout": timeout, "retry": retry}
        if limiter is not None or adaptive is not None:
            options.update(limiter=limiter, tokens=tokens, adaptive=adaptive)
        direct = timeout is None and retry is None and limiter is None and adaptive is None
        call = StepLane(call_fn, step, slots, options, direct=direct)
        if mode == "unordered":
            states.append(slots)
            return call
        ordered_call = InputOrder(call) if mode == "input" else KeyOrder(call)
        states.append(ordered_call)
        return ordered_call

    return per_event(
        lane,
        name=step,
        kind="map_async",
        ordering=mode,
        requires=None if mode == "unordered" else mode,
        capacity=capacity,
        stats=lambda: _merge_stats(states, capacity),
        payload_in=types.payload_in,
        payload_out=types.payload_out,
    )


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
            if not self.direct:
                return await run_step(self.fn, event, **self.options)
            # The same bookkeeping a runner does around a direct call in its own
            # frame, on the loop clock as in run_step.
            clock = asyncio.get_running_loop().time
            started = time.time()
            t0 = clock()
            try:
                result = await self.fn(event)
            except Exception as exc:
                return self.failed(event, exc, started, clock() - t0)
            return self.done(event, result, started, clock() - t0)
        finally:
            slots.release()

    def done(self, event: Event, result: object, started: float, seconds: float) -> Event:
        """The event after a direct call of ``fn`` returned ``result``, with its record."""
        if not isinstance(result, Event):
            return self.failed(event, _not_an_event(self.step, result, event), started, seconds)
        return with_record(event, result, self.step, started, seconds, 1)

    def failed(self, event: Event, exc: Exception, started: float, seconds: float) -> Event:
        """The event after a direct call of ``fn`` raised ``exc``: failed, with its record."""
        return _failure(event, exc, self.step, started, seconds, 1)


def _merge_stats(states: list[Slots | InputOrder | KeyOrder], capacity: int) -> MapStatistics:
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
    # The latest attempt's wall-clock start, loop-clock start and limiter permit.
    started, t0, permit = time.time(), clock(), None

    async def attempt() -> Event:
        nonlocal started, t0, permit
        if limiter is not None:
            try:
                estimate = tokens(event) if tokens is not None else 0
            except Exception as exc:
                raise _EstimateFailed(exc) from exc
            # Held: the call counts until it ends, however late it reaches the endpoint.
            permit = await limiter.acquire(estimate, hold=True)
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
        except BaseException as exc:
            if permit is not None:
                # The attempt ended (failed or cancelled); its estimate stands.
                permit.settle(permit.estimate)
            if adaptive is not None and isinstance(exc, Exception):
                adaptive.on_failure(t0, clock(), exc)
            raise
        return result

    tried = await retry_call(
        attempt, retry, retry_if=lambda exc: not isinstance(exc, _EstimateFailed)
    )
    error = tried.error
    if isinstance(error, _EstimateFailed):
        # A broken token estimate fails this event, never the stream.
        return event.failed(error.error, step).evolve(attempts=event.attempts + tried.attempts)
    if error is not None:
        return _failure(event, error, step, started, clock() - t0, tried.attempts)
    result = tried.unwrap()
    t1 = clock()
    if adaptive is not None:
        adaptive.on_success(t0, t1)
    if permit is not None:
        _settle(permit, event, result, step)
    return with_record(event, result, step, started, t1 - t0, tried.attempts)


class _EstimateFailed(Exception):
    """A token estimate raised before the step ran: the event fails, unretried."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
    else:
        # No usage reported: the estimate stands, but the call has ended, so the
        # limiter counts it from now (the endpoint saw it arrive some time before).
        permit.settle(permit.estimate)


def with_record(
    before: Event, after: Event, step: str, started: float, duration: float, attempt: int = 1
) -> Event:
    """``after``, the step's result for ``before``, with the step's trace record and attempts.

    A step may write its own record (model, tokens, cost); timing is ours to fill.

    Args:
        before: the event the step was given.
        after: the event it returned.
        step: the step name.
        started: wall-clock start of the (last) attempt.
        duration: seconds the attempt took.
        attempt: attempts made.

    Returns:
        ``after``, updated in place.
    """
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
