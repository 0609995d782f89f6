"""streamflow: AI work as reactive streams — classify, retrieve, generate, check.

Bounded, at-least-once, observable; one process or Kafka between stages.
"""

from streamflow.errors import (
    ConfigError,
    EventError,
    EventFailed,
    EventFiltered,
    EventParked,
    FlowClosed,
    FlowFull,
    RetriableError,
    StreamflowError,
    TopologyError,
)
from streamflow.events import DeadLetter, ErrorInfo, Event, StepRecord
from streamflow.ops import (
    AdaptiveConcurrency,
    CircuitBreaker,
    Operator,
    RateLimiter,
    RetryPolicy,
    batch_async,
    circuit_breaker,
    fallback,
    filter,
    map_async,
    parallel,
    pipe,
    rate_limit,
    route,
    shared_limiter,
    tap,
)
from streamflow.runtime import Flow, Pipeline, RunReport, Runtime, Stage, run_flow
from streamflow.runtime import open_flow as open

__version__ = "0.1.0"

__all__ = [
    "AdaptiveConcurrency",
    "CircuitBreaker",
    "ConfigError",
    "DeadLetter",
    "ErrorInfo",
    "Event",
    "EventError",
    "EventFailed",
    "EventFiltered",
    "EventParked",
    "Flow",
    "FlowClosed",
    "FlowFull",
    "Operator",
    "Pipeline",
    "RateLimiter",
    "RetriableError",
    "RetryPolicy",
    "RunReport",
    "Runtime",
    "Stage",
    "StepRecord",
    "StreamflowError",
    "TopologyError",
    "__version__",
    "batch_async",
    "circuit_breaker",
    "fallback",
    "filter",
    "map_async",
    "open",
    "parallel",
    "pipe",
    "rate_limit",
    "route",
    "run_flow",
    "shared_limiter",
    "tap",
]
