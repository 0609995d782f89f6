"""Synchronous per-event operators: filter, tap, set_outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from streamflow.events import Event, StepRecord
from streamflow.ops._adapter import per_event
from streamflow.ops._hinted import argument_of
from streamflow.ops._operator import Lane, Operator

__all__ = ["filter", "tap"]


def filter(predicate: Callable[[Any], bool], *, name: str = "filter") -> Operator:
    """Keep events for which ``predicate`` is true; mark the others ``filtered``.

    ::

        in:   --a--b--c--|     predicate: b is False
        out:  --a--b'-c--|     b' = b with outcome "filtered"

    A filtered event is not dropped on the spot: it travels on, untouched by
    later steps, so that the sink returns its credit and counts it. A plain
    ``reactivex.operators.filter`` would leak the credit and stall the source.
    A predicate that raises fails the event (dead letter), not the stream.

    Args:
        predicate: True to keep the event. Like a step, it takes the payload
            when its first parameter's hint is the payload's type
            (``def urgent(t: Ticket) -> bool``), else the Event.
        name: the step name in traces.

    Returns:
        The operator.

    Raises:
        TopologyError: the predicate's hint cannot be resolved.
    """
    argument = argument_of(predicate, name)

    def decide(event: Event) -> Event:
        if not event.active:
            return event
        started = time.time()
        try:
            keep = predicate(argument(event))
        except Exception as exc:
            return event.failed(exc, name)
        if keep:
            return event
        record = StepRecord.timed(name, started, 0.0, outcome="filtered")
        return event.traced(record, outcome="filtered", reason=f"filtered by {name}")

    return per_event(_lane(decide), name=name, kind="filter", ordering="input", keeps_payload=True)


def tap(action: Callable[[Any], object], *, name: str = "tap") -> Operator:
    """Call ``action`` on every event for its side effect; events pass unchanged.

    ::

        in:   --a--b--|
        out:  --a--b--|    action(a), action(b) called on the way

    An exception in ``action`` is swallowed into the event's trace as a
    ``tap_failed`` record; a side effect never fails the event.

    Args:
        action: the side effect. Like a step, it takes the payload when its
            first parameter's hint is the payload's type, else the Event.
        name: the step name in traces.

    Returns:
        The operator.

    Raises:
        TopologyError: the action's hint cannot be resolved.
    """
    argument = argument_of(action, name)

    def run(event: Event) -> Event:
        try:
            action(argument(event))
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
