"""streamflow: AI work as reactive streams — classify, retrieve, generate, check.

Bounded, at-least-once, observable; one process or Kafka between stages.
"""

from streamflow.errors import (
    ConfigError,
    EventError,
    RetriableError,
    StreamflowError,
    TopologyError,
)
from streamflow.events import DeadLetter, ErrorInfo, Event, StepRecord
from streamflow.ops import (
    Operator,
    RetryPolicy,
    batch_async,
    filter_events,
    map_async,
    parallel,
    pipe,
    route,
    tap,
)
from streamflow.runtime import Pipeline, RunReport, Stage, run_flow

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DeadLetter",
    "ErrorInfo",
    "Event",
    "EventError",
    "Operator",
    "Pipeline",
    "RetriableError",
    "RetryPolicy",
    "RunReport",
    "Stage",
    "StepRecord",
    "StreamflowError",
    "TopologyError",
    "__version__",
    "batch_async",
    "filter_events",
    "map_async",
    "parallel",
    "pipe",
    "route",
    "run_flow",
    "tap",
]
