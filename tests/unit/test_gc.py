"""The collector settings a run takes, and gives back."""

from __future__ import annotations

import gc

from streamflow.runtime._gc import YOUNG_THRESHOLD, collector_tuned


def test_nested_runs_restore_the_collector_when_the_last_one_ends() -> None:
    before = gc.get_threshold()
    with collector_tuned():
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        with collector_tuned():
            pass
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD  # the outer run still lasts
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_objects_the_application_froze_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_tuned():
            assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_off_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    with collector_tuned(enabled=False):
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
