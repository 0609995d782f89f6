"""Garbage-collector settings for the length of a run.

Events in flight keep thousands of young objects alive (events, records,
coroutines), and CPython's default young-generation threshold of 700
allocations rescans them every few dozen events; every full collection also
walks everything the process built before the run (models, indexes, modules).
Measured on W0 (bench/), leaving the collector as it is costs about 2.8 µs of
every event's ~20 (17.2 against 20.0 µs of CPU per event, best of 7 runs each).
For the length of a run, objects that exist before it are frozen out of the
collector (``gc.freeze``) and the young threshold is raised; both are undone
when the last concurrent run ends. An application that froze objects itself
(a pre-fork server, say) keeps them frozen: the run then only raises the
threshold, because ``gc.unfreeze`` would release the application's objects too.
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
_froze = False


@contextlib.contextmanager
def collector_tuned(enabled: bool = True) -> Iterator[None]:
    """Freeze pre-run objects and raise the young threshold until the block ends."""
    global _active, _saved, _froze
    if not enabled:
        yield
        return
    if _active == 0:
        _saved = gc.get_threshold()
        _froze = gc.get_freeze_count() == 0
        if _froze:
            gc.freeze()
        gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), _saved[1], _saved[2])
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            if _froze:
                gc.unfreeze()
            _saved = None
