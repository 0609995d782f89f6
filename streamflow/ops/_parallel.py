"""parallel: fan one event out to independent steps and fan the results back in."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable
from reactivex.subject import Subject

from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops._operator import EventOperator, Operator, as_operator

__all__ = ["parallel"]

Merge = Callable[[Event, Mapping[str, Event]], Any]
_ids = itertools.count()


def merge_into_dict(original: Event, results: Mapping[str, Event]) -> Any:
    """Default merge: the original payload (as a dict) plus one key per branch."""
    base = original.payload
    merged: dict[str, Any] = dict(base.model_dump() if hasattr(base, "model_dump") else base or {})
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
    parks it for review, it goes to review. Each branch must emit exactly one
    event per input (all streamflow operators do).

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

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            me = next(_ids)
            seqs = itertools.count()
            waiting: dict[int, tuple[Event, dict[str, Event]]] = {}
            subjects: dict[str, Subject[Event]] = {label: Subject() for label in ops}
            open_branches = len(ops)
            upstream_done = False
            disposables = CompositeDisposable()

            def maybe_complete() -> None:
                if upstream_done and not waiting and open_branches == 0:
                    observer.on_completed()

            def branch_result(label: str) -> Callable[[Event], None]:
                def on_next(result: Event) -> None:
                    tags = result._fanout
                    if not tags or tags[-1][0] != me:
                        raise AssertionError(f"{name}: branch '{label}' emitted a foreign event")
                    seq = tags[-1][1]
                    original, results = waiting[seq]
                    results[label] = result
                    if len(results) == len(ops):
                        del waiting[seq]
                        observer.on_next(_fan_in(original, results, merge, name))

                return on_next

            def branch_done() -> None:
                nonlocal open_branches
                open_branches -= 1
                maybe_complete()

            for label, op in ops.items():
                disposables.add(
                    op(subjects[label]).subscribe(
                        branch_result(label), observer.on_error, branch_done, scheduler=scheduler
                    )
                )

            def on_next(event: Event) -> None:
                if not event.active:
                    observer.on_next(event)
                    return
                seq = next(seqs)
                waiting[seq] = (event, {})
                for subject in subjects.values():
                    # Each branch gets its own trace list: steps append to it in place.
                    branch_in = event.model_copy(update={"trace": list(event.trace)})
                    branch_in._fanout = (*event._fanout, (me, seq))
                    subject.on_next(branch_in)

            def on_error(error: Exception) -> None:
                for subject in subjects.values():
                    subject.on_error(error)

            def on_completed() -> None:
                nonlocal upstream_done
                upstream_done = True
                for subject in subjects.values():
                    subject.on_completed()

            disposables.add(source.subscribe(on_next, on_error, on_completed, scheduler=scheduler))
            return disposables

        return reactivex.create(subscribe)

    capacities = [op.capacity for op in ops.values() if op.capacity is not None]
    return Operator(
        fn=operator,
        name=name,
        kind="parallel",
        ordering="unordered",
        capacity=min(capacities) if capacities else None,
        branches=tuple(ops.items()),
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
