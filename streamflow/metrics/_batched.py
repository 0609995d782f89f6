"""Durations recorded in bulk: the hot path appends, numpy folds a thousand at a time."""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

__all__ = ["BatchedDurations", "Durations"]

Durations = npt.NDArray[np.float64]

FOLD_AT = 1024
"""Values kept before they are folded (at most ~32 KB per instance)."""


class BatchedDurations(ABC):
    """A summary of durations that records by appending and folds in bulk.

    Every event adds one duration per stage, so :meth:`add` is one list append
    (about a quarter of the cost of updating buckets value by value); every
    :data:`FOLD_AT` values, and before anything is read, the pending values go
    to :meth:`_fold` as one numpy array. Subclasses keep the summary.

    One recording can feed two summaries: with ``feeds``, every fold goes to
    that one too, and reading it first folds what its feeders hold.

    ``add`` takes no lock and may run on one thread while another reads: a
    fold removes exactly the values it took, so a value appended meanwhile
    waits for the next fold rather than being lost. Folds and reads hold a lock
    (a feeder's before the one it feeds).

    Args:
        feeds: another summary that receives every value recorded here.
    """

    def __init__(self, feeds: BatchedDurations | None = None) -> None:
        self._pending: list[float] = []
        self._lock = threading.Lock()
        self._feeds = feeds
        self._feeders: weakref.WeakSet[BatchedDurations] = weakref.WeakSet()
        if feeds is not None:
            feeds._feeders.add(self)

    def add(self, seconds: float) -> None:
        """Record one duration."""
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= FOLD_AT:
            self.flush()

    def flush(self) -> None:
        """Fold every value recorded so far."""
        with self._lock:
            pending = self._pending
            taken = len(pending)
            if not taken:
                return
            values = np.array(pending[:taken], dtype=np.float64)
            del pending[:taken]
            self._fold(values)
            if self._feeds is not None:
                with self._feeds._lock:
                    self._feeds._fold(values)

    def _folded(self) -> threading.Lock:
        """Fold everything recorded here and by feeders; returns the lock to read under."""
        for feeder in list(self._feeders):
            feeder.flush()
        self.flush()
        return self._lock

    @abstractmethod
    def _fold(self, values: Durations) -> None:
        """Add ``values`` to the summary (called with the lock held)."""
