"""Garbage-collector settings for the length of a run.

Events in flight keep thousands of young objects alive (events, records,
coroutines), and CPython's default young-generation threshold of 700
allocations rescans them every few dozen events; every full collection also
walks everything the process built before the run (models, indexes, modules).
Measured on W0 (bench/), the collector took about 9 µs of every event's ~48.
For the length of a run, objects that exist before it are frozen out of the
collector (``gc.freeze``) and the young threshold is raised; both are undone
when the last concurrent run ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["YOUNG_THRESHOLD", "collector_tuned"]

YOUNG_THRESHOLD = 50_000
"""Allocations between young collections during a run (CPython's default: 700)."""

_active = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def collector_tuned(enabled: bool = True) -> Iterator[None]:
    """Freeze pre-run objects and raise the young threshold until the block ends."""
    global _active, _saved
    if not enabled:
        yield
        return
    if _active == 0:
        _saved = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), _saved[1], _saved[2])
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            gc.unfreeze()
            _saved = None
