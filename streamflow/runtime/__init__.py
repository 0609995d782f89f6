"""Runtime: pipelines, stages and the runner that wires source -> stages -> sink."""

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
    "rejected",
    "run_flow",
]
