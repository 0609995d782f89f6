"""parallel: fan one event out to independent steps and fan the results back in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from streamflow.errors import ConfigError, StepFailed
from streamflow.events import Event
from streamflow.ops._adapter import lane_of, per_event
from streamflow.ops._operator import EventOperator, Lane, Operator, as_operator

__all__ = ["merge_into_dict", "parallel"]

Merge = Callable[[Event, Mapping[str, Event]], Any]


def merge_into_dict(original: Event, results: Mapping[str, Event]) -> Any:
    """Default merge: the original payload (as a dict) plus one key per branch.

    Args:
        original: the event as it entered ``parallel``.
        results: each branch's finished event, by branch name.

    Returns:
        A dict: the payload's fields (a model is dumped) and each branch's payload
        under its name.

    Raises:
        StepFailed: the payload is neither a dict, a pydantic model nor None.
    """
    base = original.payload
    if hasattr(base, "model_dump"):
        base = base.model_dump()
    if base is not None and not isinstance(base, Mapping):
        raise StepFailed(
            f"parallel: the default merge adds each branch's result to the payload as a dict, "
            f"but the payload is a {type(base).__name__}; pass merge=lambda original, "
            "results: ... to combine them",
            event_id=original.id,
        )
    merged: dict[str, Any] = dict(base or {})
    for name, result in results.items():
        merged[name] = result.payload
    return merged


def parallel(
    branches: Mapping[str, Operator | EventOperator],
    *,
    merge: Merge = merge_into_dict,
    name: str = "parallel",
) -> Operator:
    """Run every branch on each event at once, then merge their results into one event.

    ::

        in:        --a----------b---|
        left:      ----La----------Lb|
        right:     -------Ra-----Rb-|
        out:       -------A--------B|    A = merge(a, {left: La, right: Ra})

    ``merge(original, {branch: result})`` returns the merged payload; the
    merged event's trace holds the records of every branch. If a branch fails
    the event, the merged event fails with that error (dead letter); if one
    parks it for review, it goes to review. The branches of one event run
    concurrently; a plain reactivex operator as a branch must emit exactly one
    event per input and keep its id.

    Args:
        branches: name -> operator, all fed the same event.
        merge: builds the merged payload.
        name: the step name in traces and diagrams.

    Raises:
        ConfigError: fewer than one branch.
    """
    if not branches:
        raise ConfigError(f"{name}: give at least one branch")
    ops = {label: as_operator(op, name=label) for label, op in branches.items()}

    def lane() -> Lane:
        lanes = {label: lane_of(op) for label, op in ops.items()}

        async def call(event: Event) -> Event:
            if not event.active:
                return event
            # Each branch gets its own trace list: steps append to it in place.
            calls = [
                branch(event.model_copy(update={"trace": list(event.trace)}))
                for branch in lanes.values()
            ]
            results = await asyncio.gather(*calls)
            return _fan_in(event, dict(zip(lanes, results, strict=True)), merge, name)

        return call

    capacities = [op.capacity for op in ops.values() if op.capacity is not None]
    return per_event(
        lane,
        name=name,
        kind="parallel",
        ordering="unordered",
        capacity=min(capacities) if capacities else None,
        branches=tuple(ops.items()),
        payload_out=dict if merge is merge_into_dict else None,
    )


def _fan_in(original: Event, results: dict[str, Event], merge: Merge, name: str) -> Event:
    base = len(original.trace)
    trace = list(original.trace)
    attempts = original.attempts
    for result in results.values():
        trace.extend(result.trace[base:])
        attempts += max(0, result.attempts - original.attempts)
    for result in results.values():
        if result.outcome in ("failed", "review"):
            return original.model_copy(
                update={
                    "trace": trace,
                    "attempts": attempts,
                    "outcome": result.outcome,
                    "error": result.error,
                    "reason": result.reason,
                }
            )
    try:
        payload = merge(original, results)
    except Exception as exc:
        return original.model_copy(update={"trace": trace}).failed(exc, name)
    return original.model_copy(update={"payload": payload, "trace": trace, "attempts": attempts})
