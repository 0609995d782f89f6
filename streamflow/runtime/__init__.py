"""Runtime: pipelines, stages and the runner that wires source -> stages -> sink."""

from typing import TYPE_CHECKING

from streamflow.runtime._library import Flow, expect_ok, open_flow
from streamflow.runtime._otel import EventSpans
from streamflow.runtime._pipeline import Pipeline, Stage, StageHooks
from streamflow.runtime._report import LatencySketch, RunReport
from streamflow.runtime._runner import run_flow
from streamflow.runtime._runtime import Runtime
from streamflow.runtime.review import (
    Decision,
    FileReviewQueue,
    KafkaReviewQueue,
    ReviewPolicy,
    ReviewResult,
    approved,
    decisions_path,
    decisions_topic,
    parked_stage,
    rejected,
)

__all__ = [
    "Decision",
    "EventSpans",
    "FileReviewQueue",
    "Flow",
    "KafkaReviewQueue",
    "LatencySketch",
    "Pipeline",
    "ReviewPolicy",
    "ReviewResult",
    "RunReport",
    "Runtime",
    "Stage",
    "StageHooks",
    "approved",
    "decisions_path",
    "decisions_topic",
    "expect_ok",
    "open_flow",
    "parked_stage",
    "produce_input",
    "rejected",
    "run_distributed",
    "run_flow",
    "run_worker",
]

if TYPE_CHECKING:  # the same names, typed, without loading aiokafka at run time
    from streamflow.runtime._distributed import run_distributed
    from streamflow.runtime._produce import produce_input
    from streamflow.runtime._worker import run_worker

_KAFKA_RUNTIME = {
    "produce_input": "_produce",
    "run_distributed": "_distributed",
    "run_worker": "_worker",
}


def __getattr__(name: str) -> object:
    # The Kafka runtime loads aiokafka; import it only when someone asks for it.
    module = _KAFKA_RUNTIME.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"streamflow.runtime.{module}"), name)
    raise AttributeError(f"module 'streamflow.runtime' has no attribute {name!r}")
