"""Durations recorded in bulk: the hot path appends, numpy folds a thousand at a time."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

__all__ = ["BatchedDurations", "Durations"]

Durations = npt.NDArray[np.float64]

FOLD_AT = 1024
"""Values kept before they are folded (at most ~32 KB per instance)."""


class BatchedDurations:
    """A summary of durations that records by appending and folds in bulk.

    Every event adds one duration per stage, so :meth:`add` is one list append
    (about a quarter of the cost of updating buckets value by value); every
    :data:`FOLD_AT` values, and before anything is read, the pending values go
    to :meth:`_fold` as one numpy array. Subclasses keep the summary.

    ``add`` takes no lock and may run on one thread while another reads: a
    fold removes exactly the values it took, so a value appended meanwhile
    waits for the next fold rather than being lost. Folds and reads hold a lock.
    """

    def __init__(self) -> None:
        self._pending: list[float] = []
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one duration."""
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= FOLD_AT:
            with self._lock:
                self._fold_pending()

    def _fold_pending(self) -> None:
        # Call with the lock held.
        pending = self._pending
        taken = len(pending)
        if taken:
            values = np.array(pending[:taken], dtype=np.float64)
            del pending[:taken]
            self._fold(values)

    def _fold(self, values: Durations) -> None:
        raise NotImplementedError
