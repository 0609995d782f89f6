"""RunReport: what a run did, for the summary table and for tests."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from streamflow.events import Event
from streamflow.metrics import BatchedDurations, Durations

__all__ = ["LatencySketch", "RunReport", "lookup_field"]

_GROWTH = math.log(1.02)
_PER_LOG = 1 / _GROWTH
_FLOOR = 1e-7


class LatencySketch(BatchedDurations):
    """Quantiles of durations in constant memory (log buckets, ~1% relative error).

    A duration lands in bucket ``trunc(log(seconds) / log(1.02))``; anything
    below 0.1 µs counts as 0.1 µs. Durations are folded into the buckets in
    bulk (see :class:`~streamflow.metrics.BatchedDurations`).
    """

    def __init__(self, feeds: BatchedDurations | None = None) -> None:
        super().__init__(feeds)
        self._count = 0
        self._buckets: dict[int, int] = {}

    def _fold(self, values: Durations) -> None:
        scaled = np.log(np.maximum(values, _FLOOR)) * _PER_LOG
        keys = np.trunc(scaled).astype(np.int64)
        low = int(keys.min())
        counts = np.bincount(keys - low)
        used = np.flatnonzero(counts)
        buckets = self._buckets
        for key, count in zip((used + low).tolist(), counts[used].tolist(), strict=True):
            buckets[key] = buckets.get(key, 0) + count
        self._count += len(values)

    @property
    def count(self) -> int:
        """Durations recorded."""
        with self._folded():
            return self._count

    def quantile(self, q: float) -> float:
        """Return the ``q`` quantile in seconds (0 when empty)."""
        with self._folded():
            if not self._count:
                return 0.0
            rank = q * (self._count - 1)
            seen = 0
            for bucket in sorted(self._buckets):
                seen += self._buckets[bucket]
                if seen > rank:
                    return math.exp((bucket + 0.5) * _GROWTH)
            return math.exp((max(self._buckets) + 0.5) * _GROWTH)


@dataclass
class RunReport:
    """Counts and latencies of one run.

    Attributes:
        pipeline: pipeline name.
        read: records read from the source.
        outcomes: finished events by outcome (ok, review, dead_lettered, filtered, interrupted).
        groups: per summary group (e.g. category), counts by outcome.
        stages: per stage, a latency sketch.
        stage_cost: per stage, model cost in US dollars.
        group_cost: per summary group, model cost in US dollars.
        unpriced: models called that have no price: their cost is unknown, and the
            costs above count priced calls only.
        end_to_end: latency sketch from read to written.
        peak_in_flight: the most events inside at once (<= window).
        window: the credit window.
        error: a fatal error that stopped the run, if any.
    """

    pipeline: str
    window: int
    summary_field: str | None = None
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    groups: dict[str, Counter[str]] = field(default_factory=dict)
    stages: dict[str, LatencySketch] = field(default_factory=dict)
    stage_cost: dict[str, float] = field(default_factory=dict)
    group_cost: dict[str, float] = field(default_factory=dict)
    unpriced: set[str] = field(default_factory=set)
    end_to_end: LatencySketch = field(default_factory=LatencySketch)
    peak_in_flight: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    stopped_early: bool = False
    error: BaseException | None = None

    @property
    def done(self) -> int:
        """Events finished in any way."""
        return sum(self.outcomes.values())

    @property
    def elapsed(self) -> float:
        """Seconds from start to finish (or to now)."""
        return (self.finished or time.perf_counter()) - self.started

    @property
    def events_per_second(self) -> float:
        """Finished events per second."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def count(self, outcome: str, event: Event | None = None) -> None:
        """Count one finished event under ``outcome`` (and its summary group)."""
        self.outcomes[outcome] += 1
        if self.summary_field is None:
            return
        group = lookup_field(event.payload, self.summary_field) if event is not None else None
        label = str(group) if group is not None else "(none)"
        self.groups.setdefault(label, Counter())[outcome] += 1
        if event is not None:
            cost = 0.0
            for record in event.trace:
                if record.cost_usd is not None:
                    cost += record.cost_usd
                elif record.model is not None:
                    self.unpriced.add(record.model)
            if cost:
                self.group_cost[label] = self.group_cost.get(label, 0.0) + cost


def lookup_field(payload: Any, path: str) -> Any:
    """Return the value at dotted ``path`` in a dict or pydantic payload (None if absent)."""
    value = payload
    for part in path.split("."):
        if value is None:
            return None
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, BaseModel):
            value = getattr(value, part, None)
        else:
            return None
    return value
