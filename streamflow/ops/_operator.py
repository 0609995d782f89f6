"""The Operator type: a function from an Observable of events to another, plus metadata.

Metadata (name, ordering, buffer bounds, branches) lets a pipeline check its
shape when it is built and draw itself as a diagram; calling the operator is
plain reactivex composition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reactivex import Observable

from streamflow.errors import TopologyError
from streamflow.events import Event

__all__ = [
    "EventOperator",
    "Lane",
    "LaneFactory",
    "Operator",
    "Ordering",
    "as_operator",
    "check_ordering",
    "pipe",
]

EventOperator = Callable[[Observable[Event]], Observable[Event]]

Lane = Callable[[Event], Awaitable[Event]]
"""An operator's per-event form: does to one event what the operator does, and
never raises for the event's own failures (they come back as a failed event)."""

LaneFactory = Callable[[], Lane]
"""Makes a fresh :data:`Lane`, with its own bounds and counters, for one run."""

Ordering = Literal["unordered", "input", "key"]
"""What an operator guarantees about the order of what it emits:
``input`` keeps input order, ``key`` keeps order per event key, ``unordered`` neither."""

_RANK = {"unordered": 0, "key": 1, "input": 2}


@dataclass(frozen=True)
class Operator:
    """An event operator with a name and what it promises about ordering.

    Attributes:
        fn: the reactivex operator itself.
        name: a short name for diagrams and errors.
        kind: ``map_async``, ``route``, ``parallel``, ``chain`` ...
        ordering: the order its output keeps relative to its input.
        requires: the order its input must have (``key`` or ``input``), if any.
        capacity: the bound of its largest internal buffer, if it has one.
        branches: labelled sub-operators (route, parallel) or the steps of a chain.
        stats: returns the operator's buffer statistics.
        payload_in: the payload type its step takes (None: any), from a typed step's hint.
        payload_out: the payload type it hands on (None: not known).
        keeps_payload: it never changes the payload (filter, tap, rate_limit), so
            what comes out has the type that went in.
        lane: makes the operator's per-event form. Every streamflow operator is
            written as one (and its ``fn`` derived from it by
            :func:`~streamflow.ops._adapter.stream_of`); the runtime awaits it
            per event. None only for a user's own reactivex operator, which
            the runtime runs on the observable path.
    """

    fn: EventOperator
    name: str
    kind: str = "operator"
    ordering: Ordering = "input"
    requires: Ordering | None = None
    capacity: int | None = None
    branches: tuple[tuple[str, Operator], ...] = field(default=())
    stats: Callable[[], object] | None = field(default=None, compare=False, repr=False)
    lane: LaneFactory | None = field(default=None, compare=False, repr=False)
    payload_in: type[Any] | None = None
    payload_out: type[Any] | None = None
    keeps_payload: bool = False

    def statistics(self) -> object:
        """Return the operator's buffer statistics, or None if it keeps no buffer."""
        return self.stats() if self.stats is not None else None

    def __call__(self, source: Observable[Event]) -> Observable[Event]:
        return self.fn(source)

    def walk(self) -> Iterable[Operator]:
        """Yield this operator and every operator inside it, depth first."""
        yield self
        for _, child in self.branches:
            yield from child.walk()


def as_operator(op: Operator | EventOperator, name: str | None = None) -> Operator:
    """Wrap a plain reactivex operator so it can sit in a pipeline.

    A plain function promises nothing about ordering, so it counts as
    ``unordered`` unless it is an :class:`Operator` already.
    """
    if isinstance(op, Operator):
        return op
    label = name or getattr(op, "__name__", None) or type(op).__name__
    return Operator(fn=op, name=label, kind="rx", ordering="unordered")


def pipe(*ops: Operator | EventOperator, name: str = "chain") -> Operator:
    """Compose operators left to right, keeping their metadata.

    Args:
        ops: operators applied in order.
        name: the chain's name in diagrams.

    Returns:
        One Operator; calling it is ``reactivex.pipe(*ops)``.

    Raises:
        TopologyError: when an operator needs an order its upstream breaks.
    """
    # The adapter builds on this module, so it is imported when a chain is made.
    from streamflow.ops._adapter import stream_of

    steps = tuple(as_operator(op) for op in ops)
    check_ordering(steps, where=name)
    factories = [s.lane for s in steps]
    lane = _chain_lane(factories) if all(factories) else None

    def chain(source: Observable[Event]) -> Observable[Event]:
        for step in steps:
            source = step(source)
        return source

    ordering: Ordering = "input"
    for step in steps:
        ordering = _weakest(ordering, step.ordering)
    capacities = [s.capacity for s in steps if s.capacity is not None]
    capacity = min(capacities) if capacities else None
    payload_out: type[Any] | None = None
    keeps = True
    for step in steps:
        if not step.keeps_payload:
            payload_out, keeps = step.payload_out, False
    return Operator(
        # One adapter over the chained lanes when every step has one (fewer hops).
        fn=chain if lane is None else stream_of(lane, name=name, capacity=capacity),
        name=name,
        kind="chain",
        ordering=ordering,
        requires=next((s.requires for s in steps if s.requires), None),
        capacity=capacity,
        branches=tuple((s.name, s) for s in steps),
        lane=lane,
        payload_in=next((s.payload_in for s in steps if not s.keeps_payload), None),
        payload_out=payload_out,
        keeps_payload=keeps,
    )


def _chain_lane(factories: Sequence[LaneFactory | None]) -> LaneFactory:
    def make() -> Lane:
        lanes = [factory() for factory in factories if factory is not None]

        async def chain(event: Event) -> Event:
            for lane in lanes:
                event = await lane(event)
            return event

        return chain

    return make


def _weakest(a: Ordering, b: Ordering) -> Ordering:
    return a if _RANK[a] <= _RANK[b] else b


def check_ordering(
    steps: Sequence[Operator], *, where: str, upstream: Ordering = "input"
) -> Ordering:
    """Check that no step asks for an order that an earlier step has broken.

    Args:
        steps: operators in flow order.
        where: the pipeline or chain name, for the message.
        upstream: the order the input arrives in.

    Returns:
        The ordering guaranteed after the last step.

    Raises:
        TopologyError: naming the step that breaks order and the fix.
    """
    current = upstream
    breaker: str | None = None
    for step in steps:
        if step.requires and _RANK[current] < _RANK[step.requires]:
            culprit = breaker or "the input"
            raise TopologyError(
                f"{where}: step '{step.name}' asks for "
                f"{'per-key' if step.requires == 'key' else 'input'} order, but "
                f"'{culprit}' upstream emits events unordered; make '{culprit}' keep order "
                f"(map_async(..., ordered='key') or ordered=True), or drop the ordering "
                f"requirement of '{step.name}'"
            )
        if _RANK[step.ordering] < _RANK[current]:
            breaker = step.name
        current = _weakest(current, step.ordering)
    return current
