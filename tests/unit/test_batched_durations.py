"""Durations folded in bulk give the same sketch and histogram as value by value."""

from __future__ import annotations

import math
from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamflow.metrics import PipelineMetrics, StageMetrics
from streamflow.metrics._batched import FOLD_AT
from streamflow.metrics._collectors import _BUCKETS
from streamflow.runtime import LatencySketch

durations = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
        st.sampled_from([0.0, 1e-9, *_BUCKETS]),
    ),
    max_size=3 * FOLD_AT,
)


def _bucket(seconds: float) -> int:
    # The sketch's bucket, computed one value at a time.
    return int(math.log(max(seconds, 1e-7)) / math.log(1.02))


def _nearest_rank(values: list[float], q: float) -> float:
    # The sketch's answer: the middle of the bucket that holds the rank.
    ordered = sorted(_bucket(v) for v in values)
    seen_bucket = ordered[int(q * (len(ordered) - 1))]
    return math.exp((seen_bucket + 0.5) * math.log(1.02))


@given(durations)
def test_sketch_folded_in_bulk_matches_value_by_value(values: list[float]) -> None:
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    assert sketch.count == len(values)
    for q in (0.0, 0.5, 0.99, 1.0):
        expected = _nearest_rank(values, q) if values else 0.0
        assert sketch.quantile(q) == expected


@given(durations)
def test_histogram_folded_in_bulk_matches_bisect(values: list[float]) -> None:
    stage = StageMetrics()
    for value in values:
        stage.add(value)
    counts, total = stage.histogram()
    expected = [0] * (len(_BUCKETS) + 1)
    for value in values:
        expected[bisect_left(_BUCKETS, value)] += 1
    assert counts == expected
    assert math.isclose(total, sum(values), rel_tol=1e-9, abs_tol=1e-9)


def test_scrape_sees_durations_not_yet_folded() -> None:
    metrics = PipelineMetrics(CollectorRegistry(), "p")
    stage = metrics.stage("classify")
    for _ in range(3):  # far fewer than a fold's worth
        stage.add(0.002)
    count = metrics.registry.get_sample_value(
        "streamflow_stage_duration_seconds_count", {"pipeline": "p", "stage": "classify"}
    )
    below = metrics.registry.get_sample_value(
        "streamflow_stage_duration_seconds_bucket",
        {"pipeline": "p", "stage": "classify", "le": "0.0025"},
    )
    assert (count, below) == (3, 3)


class _AppendedDuringFold(list[float]):
    """A pending list that gets a value appended just after a fold copied it,
    as the recording thread may do while another thread folds."""

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        taken = super().__getitem__(index)
        if isinstance(index, slice):
            self.append(0.5)
        return taken


def test_a_value_added_during_a_fold_waits_for_the_next_one() -> None:
    sketch = LatencySketch()
    sketch._pending = _AppendedDuringFold([0.1, 0.2])
    assert sketch.count == 2  # the fold took two; one arrived meanwhile
    assert list(sketch._pending) == [0.5]
    sketch._pending = []
    sketch.add(0.5)
    assert sketch.count == 3


def test_a_sketch_feeds_the_histogram_it_is_given() -> None:
    metrics = PipelineMetrics(CollectorRegistry(), "p")
    sketch = LatencySketch(metrics.stage("check"))
    for value in (0.002, 0.2, 7.0):
        sketch.add(value)

    counts, total = metrics.stage("check").histogram()  # folds the sketch first
    assert sum(counts) == 3 and math.isclose(total, 7.202)
    assert sketch.count == 3  # and the sketch kept its own copy
    for _ in range(FOLD_AT):
        sketch.add(0.002)
    assert sum(metrics.stage("check").histogram()[0]) == FOLD_AT + 3
