"""Synchronous per-event operators: filter, tap, set_outcome."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamflow.events import Event, StepRecord
from streamflow.ops._adapter import per_event
from streamflow.ops._operator import Lane, Operator

__all__ = ["filter", "tap"]


def filter(predicate: Callable[[Event], bool], *, name: str = "filter") -> Operator:
    """Keep events for which ``predicate`` is true; mark the others ``filtered``.

    ::

        in:   --a--b--c--|     predicate: b is False
        out:  --a--b'-c--|     b' = b with outcome "filtered"

    A filtered event is not dropped on the spot: it travels on, untouched by
    later steps, so that the sink returns its credit and counts it. A plain
    ``reactivex.operators.filter`` would leak the credit and stall the source.
    A predicate that raises fails the event (dead letter), not the stream.

    Args:
        predicate: True to keep the event.
        name: the step name in traces.
    """

    def decide(event: Event) -> Event:
        if not event.active:
            return event
        started = time.time()
        try:
            keep = predicate(event)
        except Exception as exc:
            return event.failed(exc, name)
        if keep:
            return event
        record = StepRecord.timed(name, started, 0.0, outcome="filtered")
        return event.traced(record, outcome="filtered", reason=f"filtered by {name}")

    return per_event(_lane(decide), name=name, kind="filter", ordering="input", keeps_payload=True)


def tap(action: Callable[[Event], object], *, name: str = "tap") -> Operator:
    """Call ``action`` on every event for its side effect; events pass unchanged.

    ::

        in:   --a--b--|
        out:  --a--b--|    action(a), action(b) called on the way

    An exception in ``action`` is swallowed into the event's trace as a
    ``tap_failed`` record; a side effect never fails the event.
    """

    def run(event: Event) -> Event:
        try:
            action(event)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            record = StepRecord.timed(name, time.time(), 0.0, outcome="tap_failed", detail=detail)
            return event.traced(record)
        return event

    return per_event(_lane(run), name=name, kind="tap", ordering="input", keeps_payload=True)


def _lane(fn: Callable[[Event], Event]) -> Callable[[], Lane]:
    async def call(event: Event) -> Event:
        return fn(event)

    # Stateless: every run shares the one coroutine function.
    return lambda: call
