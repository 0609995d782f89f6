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
    AdaptiveConcurrency,
    CircuitBreaker,
    Operator,
    RateLimiter,
    RetryPolicy,
    batch_async,
    circuit_breaker,
    fallback,
    filter_events,
    map_async,
    parallel,
    pipe,
    rate_limit,
    route,
    shared_limiter,
    tap,
)
from streamflow.runtime import Pipeline, RunReport, Stage, run_flow

__version__ = "0.1.0"

__all__ = [
    "AdaptiveConcurrency",
    "CircuitBreaker",
    "ConfigError",
    "DeadLetter",
    "ErrorInfo",
    "Event",
    "EventError",
    "Operator",
    "Pipeline",
    "RateLimiter",
    "RetriableError",
    "RetryPolicy",
    "RunReport",
    "Stage",
    "StepRecord",
    "StreamflowError",
    "TopologyError",
    "__version__",
    "batch_async",
    "circuit_breaker",
    "fallback",
    "filter_events",
    "map_async",
    "parallel",
    "pipe",
    "rate_limit",
    "route",
    "run_flow",
    "shared_limiter",
    "tap",
]
