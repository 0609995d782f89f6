"""The stage boundary: a bounded channel in front of a stage and a cap on events inside it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from streamflow.errors import CapacityExceeded, ConfigError
from streamflow.events import Event
from streamflow.ops._context import current_stage
from streamflow.ops._operator import Operator

__all__ = ["BoundedChannel", "ChannelStatistics", "Relay", "gate"]


class Relay(Observable[Event]):
    """A pass-through to one subscriber: what a Subject does, without its locks.

    Everything runs on the event loop thread, so the hot path needs no lock
    and no copy of an observer list per event.
    """

    def __init__(self) -> None:
        super().__init__()
        self._observer: abc.ObserverBase[Event] | None = None

    def _subscribe_core(
        self, observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if self._observer is not None:
            raise RuntimeError("a Relay takes one subscriber")
        self._observer = observer
        return Disposable(self._detach)

    def _detach(self) -> None:
        self._observer = None

    def on_next(self, event: Event) -> None:
        """Pass ``event`` on."""
        if self._observer is not None:
            self._observer.on_next(event)

    def on_error(self, error: Exception) -> None:
        """Pass ``error`` on."""
        if self._observer is not None:
            self._observer.on_error(error)

    def on_completed(self) -> None:
        """Pass completion on."""
        if self._observer is not None:
            self._observer.on_completed()


@dataclass(frozen=True)
class ChannelStatistics:
    """A snapshot of a bounded channel and the stage behind it.

    Attributes:
        buffered: events waiting in the channel.
        capacity: the channel's bound.
        inside: events inside the stage now.
        peak_buffered: the most ever waiting.
        peak_inside: the most ever inside.
    """

    buffered: int
    capacity: int
    inside: int
    peak_buffered: int
    peak_inside: int


class BoundedChannel:
    """A FIFO of events with a hard bound; offering more than the bound is an error."""

    def __init__(self, capacity: int, *, name: str = "channel") -> None:
        if capacity < 1:
            raise ConfigError(f"{name}: channel capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._items: deque[Event] = deque()
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        """Append ``event``.

        Raises:
            CapacityExceeded: the channel already holds ``capacity`` events.
        """
        if len(self._items) >= self.capacity:
            raise CapacityExceeded(
                f"{self.name}: channel full at {self.capacity} events; the source must "
                "emit against credit (raise the capacity or lower the window)",
                stage=self.name,
            )
        self._items.append(event)
        if len(self._items) > self.peak:
            self.peak = len(self._items)

    def get(self) -> Event:
        """Remove and return the oldest event."""
        return self._items.popleft()


def gate(
    inner: Operator,
    *,
    concurrency: int,
    capacity: int,
    name: str,
    on_enter: Callable[[Event], None] | None = None,
    on_exit: Callable[[Event], None] | None = None,
) -> Operator:
    """Put a bounded channel in front of ``inner`` and let at most ``concurrency`` in.

    ::

        in:     --a-b-c-d--|        (concurrency=2)
        inner:  --a-b---c-d--|      c enters when a leaves
        out:    -----a---b--c-d|

    Every streamflow operator emits exactly one event per input, so an event
    leaving ``inner`` frees its place. ``on_enter``/``on_exit`` let the runtime
    measure the stage without the operators knowing about metrics.

    Args:
        inner: the stage's operator.
        concurrency: most events inside ``inner`` at once.
        capacity: the channel's bound (events waiting to enter).
        name: the stage name.
        on_enter: called as an event enters ``inner``.
        on_exit: called as an event leaves ``inner``.
    """
    if concurrency < 1:
        raise ConfigError(f"stage '{name}': concurrency must be >= 1, got {concurrency}")
    snapshots: list[Callable[[], ChannelStatistics]] = []

    def operator(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            channel = BoundedChannel(capacity, name=name)
            entry = Relay()
            inside = 0
            peak_inside = 0
            admitting = False
            upstream_done = False
            entry_closed = False

            def admit() -> None:
                nonlocal inside, peak_inside, admitting, entry_closed
                # A trampoline: a synchronous inner operator emits while we admit,
                # and must not recurse once per waiting event.
                if admitting:
                    return
                admitting = True
                try:
                    while inside < concurrency and len(channel):
                        event = channel.get()
                        inside += 1
                        peak_inside = max(peak_inside, inside)
                        if on_enter is not None:
                            on_enter(event)
                        # Tasks the stage starts now copy this context, so model
                        # calls inside them know which stage they belong to.
                        token = current_stage.set(name)
                        try:
                            entry.on_next(event)
                        finally:
                            current_stage.reset(token)
                    if upstream_done and not len(channel) and not entry_closed:
                        entry_closed = True
                        entry.on_completed()
                finally:
                    admitting = False

            def on_inner(event: Event) -> None:
                nonlocal inside
                inside -= 1
                if on_exit is not None:
                    on_exit(event)
                observer.on_next(event)
                admit()

            def on_next(event: Event) -> None:
                channel.put(event)
                admit()

            def on_completed() -> None:
                nonlocal upstream_done
                upstream_done = True
                admit()

            snapshots.append(
                lambda: ChannelStatistics(len(channel), capacity, inside, channel.peak, peak_inside)
            )
            inner_sub = inner(entry).subscribe(
                on_inner, observer.on_error, observer.on_completed, scheduler=scheduler
            )
            upstream = source.subscribe(
                on_next, observer.on_error, on_completed, scheduler=scheduler
            )
            return CompositeDisposable(inner_sub, upstream)

        return reactivex.create(subscribe)

    return Operator(
        fn=operator,
        name=name,
        kind="stage",
        ordering=inner.ordering,
        requires=inner.requires,
        capacity=capacity,
        branches=((inner.name, inner),),
        stats=lambda: snapshots[-1]() if snapshots else None,
    )
