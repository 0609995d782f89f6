"""Runtime: pipelines, stages and the runner that wires source -> stages -> sink."""

from typing import TYPE_CHECKING

from streamflow.runtime._otel import EventSpans
from streamflow.runtime._pipeline import Pipeline, Stage, StageHooks
from streamflow.runtime._report import LatencySketch, RunReport
from streamflow.runtime._review import (
    Decision,
    FileReviewQueue,
    KafkaReviewQueue,
    ReviewResult,
    approved,
    decisions_path,
    decisions_topic,
    parked_stage,
    rejected,
)
from streamflow.runtime._runner import run_flow

__all__ = [
    "Decision",
    "EventSpans",
    "FileReviewQueue",
    "KafkaReviewQueue",
    "LatencySketch",
    "Pipeline",
    "ReviewResult",
    "RunReport",
    "Stage",
    "StageHooks",
    "approved",
    "decisions_path",
    "decisions_topic",
    "parked_stage",
    "produce_input",
    "rejected",
    "run_distributed",
    "run_flow",
    "run_worker",
]

if TYPE_CHECKING:  # the same names, typed, without loading aiokafka at run time
    from streamflow.runtime._worker import produce_input, run_distributed, run_worker

_KAFKA_RUNTIME = frozenset({"produce_input", "run_distributed", "run_worker"})


def __getattr__(name: str) -> object:
    # The Kafka runtime loads aiokafka; import it only when someone asks for it.
    if name in _KAFKA_RUNTIME:
        from streamflow.runtime import _worker

        return getattr(_worker, name)
    raise AttributeError(f"module 'streamflow.runtime' has no attribute {name!r}")
