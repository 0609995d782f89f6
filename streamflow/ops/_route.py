"""route: send each event down one of several labelled paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streamflow.errors import ConfigError, StepFailed
from streamflow.events import Event
from streamflow.ops._adapter import lane_of, per_event
from streamflow.ops._hinted import argument_of
from streamflow.ops._operator import EventOperator, Lane, Operator, as_operator, check_ordering

__all__ = ["route"]


def route(
    selector: Callable[[Any], str],
    branches: Mapping[str, Operator | EventOperator],
    *,
    default: str | None = None,
    name: str = "route",
) -> Operator:
    """Send each active event down the branch whose label ``selector`` returns.

    ::

        in:      --a(x)--b(y)--c(x)--|
        x path:  --A-----------C-----|
        y path:  --------B-----------|
        out:     --A-----B-----C-----|   (merged as the branches emit)

    Inactive events skip all branches. A label with no branch goes to
    ``default`` when given, else the event fails with a clear error (and goes
    to the dead letters); a selector that raises fails the event the same way.
    Branches interleave, so the output keeps no order across them.

    Args:
        selector: returns a branch label for an event; like a step, it takes
            the payload when its first parameter's hint is the payload's type.
        branches: label -> operator.
        default: label used when the selector's label has no branch.
        name: the step name in errors and diagrams.

    Returns:
        The operator.

    Raises:
        ConfigError: no branches, or ``default`` is not a branch label.
        TopologyError: the selector's hint cannot be resolved.
    """
    if not branches:
        raise ConfigError(f"{name}: give at least one branch")
    if default is not None and default not in branches:
        raise ConfigError(f"{name}: default '{default}' is not one of {sorted(branches)}")
    argument = argument_of(selector, name)
    ops = {label: as_operator(op, name=label) for label, op in branches.items()}
    for label, op in ops.items():
        check_ordering([op], where=f"{name}[{label}]")

    def choose(event: Event) -> str | Event | None:
        # The branch label; None for an event that skips the branches, or the
        # event failed because no branch fits.
        if not event.active:
            return None
        try:
            label = selector(argument(event))
        except Exception as exc:
            return event.failed(exc, name)
        if label not in ops and default is not None:
            label = default
        if label not in ops:
            error = StepFailed(
                f"{name}: no branch for label '{label}' (branches: {sorted(ops)})",
                stage=name,
                event_id=event.id,
            )
            return event.failed(error, name)
        return label

    def lane() -> Lane:
        lanes = {label: lane_of(op) for label, op in ops.items()}

        async def call(event: Event) -> Event:
            label = choose(event)
            if label is None:
                return event
            if not isinstance(label, str):
                return label
            return await lanes[label](event)

        return call

    capacities = [op.capacity for op in ops.values() if op.capacity is not None]
    outs = {op.payload_out for op in ops.values() if not op.keeps_payload}
    keeping = sum(op.keeps_payload for op in ops.values())
    return per_event(
        lane,
        name=name,
        kind="route",
        ordering="unordered" if len(ops) > 1 else next(iter(ops.values())).ordering,
        capacity=min(capacities) if capacities else None,
        branches=tuple(ops.items()),
        # What comes out is what every branch hands on, when they agree.
        payload_out=outs.pop() if len(outs) == 1 and not keeping else None,
        keeps_payload=keeping == len(ops),
    )
