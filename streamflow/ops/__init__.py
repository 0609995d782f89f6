"""The operator algebra: functions from an Observable of events to another.

Every operator here emits exactly one event for each event it receives, and
lets inactive events (failed, filtered, parked for review) pass untouched, so
credit is returned in one place (the sink) and stages can count what is inside.
Each is written once, per event (:data:`Lane`); its reactivex form is derived.
This module exports what pipelines are built from; the engine's own parts
(slots, gates, the adapter) live in the private modules.
"""

from streamflow.flow import AdaptiveConcurrency, AdaptiveStatistics
from streamflow.ops._batch import BatchStatistics, batch_async
from streamflow.ops._context import (
    Instrumentation,
    RunScope,
    current_scope,
    current_stage,
    instrumentation,
    run_scope,
)
from streamflow.ops._limiter import Limiter, Permit, RateLimiter, RateLimitStatistics
from streamflow.ops._limiter_registry import (
    InProcessLimiters,
    LimiterBackend,
    LimiterRegistry,
    SharedLimiter,
    current_limiters,
    reset_shared_limiters,
    shared_limiter,
)
from streamflow.ops._map_async import MapStatistics, StepFn, map_async
from streamflow.ops._operator import (
    EventOperator,
    Lane,
    Operator,
    Ordering,
    as_operator,
    pipe,
)
from streamflow.ops._parallel import merge_into_dict, parallel
from streamflow.ops._rate_limit import rate_limit
from streamflow.ops._resilience import (
    BreakerState,
    BreakerStatistics,
    CircuitBreaker,
    circuit_breaker,
    fallback,
)
from streamflow.ops._retry import DEFAULT_RETRY_ON, RetryOutcome, RetryPolicy, retry_call
from streamflow.ops._route import route
from streamflow.ops._simple import filter, tap

__all__ = [
    "DEFAULT_RETRY_ON",
    "AdaptiveConcurrency",
    "AdaptiveStatistics",
    "BatchStatistics",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "EventOperator",
    "InProcessLimiters",
    "Instrumentation",
    "Lane",
    "Limiter",
    "LimiterBackend",
    "LimiterRegistry",
    "MapStatistics",
    "Operator",
    "Ordering",
    "Permit",
    "RateLimitStatistics",
    "RateLimiter",
    "RetryOutcome",
    "RetryPolicy",
    "RunScope",
    "SharedLimiter",
    "StepFn",
    "as_operator",
    "batch_async",
    "circuit_breaker",
    "current_limiters",
    "current_scope",
    "current_stage",
    "fallback",
    "filter",
    "instrumentation",
    "map_async",
    "merge_into_dict",
    "parallel",
    "pipe",
    "rate_limit",
    "reset_shared_limiters",
    "retry_call",
    "route",
    "run_scope",
    "shared_limiter",
    "tap",
]
