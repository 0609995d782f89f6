"""Runtime: pipelines, stages and the runner that wires source -> stages -> sink."""

from streamflow.runtime._pipeline import Pipeline, Stage, StageHooks
from streamflow.runtime._report import LatencySketch, RunReport
from streamflow.runtime._runner import run_flow

__all__ = ["LatencySketch", "Pipeline", "RunReport", "Stage", "StageHooks", "run_flow"]
