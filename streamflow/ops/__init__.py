"""The operator algebra: functions from an Observable of events to another.

Every operator here emits exactly one event for each event it receives, and
lets inactive events (failed, filtered, parked for review) pass untouched, so
credit is returned in one place (the sink) and stages can count what is inside.
"""

from streamflow.flow import (
    AdaptiveConcurrency,
    AdaptiveStatistics,
    CreditStatistics,
    CreditWindow,
    Slots,
    Ticket,
)
from streamflow.ops._batch import BatchStatistics, batch_async
from streamflow.ops._context import (
    Instrumentation,
    RunScope,
    StagePlace,
    StageVar,
    current_scope,
    current_stage,
    instrumentation,
    run_scope,
)
from streamflow.ops._gate import BoundedChannel, ChannelStatistics, Relay, gate
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
from streamflow.ops._map_async import MapStatistics, StepFn, StepLane, map_async, run_step
from streamflow.ops._operator import (
    EventOperator,
    Lane,
    LaneFactory,
    Operator,
    Ordering,
    as_operator,
    check_ordering,
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
from streamflow.ops._retry import RetryPolicy
from streamflow.ops._route import route
from streamflow.ops._simple import filter_events, tap

branch = route
filter = filter_events

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveStatistics",
    "BatchStatistics",
    "BoundedChannel",
    "BreakerState",
    "BreakerStatistics",
    "ChannelStatistics",
    "CircuitBreaker",
    "CreditStatistics",
    "CreditWindow",
    "EventOperator",
    "InProcessLimiters",
    "Instrumentation",
    "Lane",
    "LaneFactory",
    "Limiter",
    "LimiterBackend",
    "LimiterRegistry",
    "MapStatistics",
    "Operator",
    "Ordering",
    "Permit",
    "RateLimitStatistics",
    "RateLimiter",
    "Relay",
    "RetryPolicy",
    "RunScope",
    "SharedLimiter",
    "Slots",
    "StagePlace",
    "StageVar",
    "StepFn",
    "StepLane",
    "Ticket",
    "as_operator",
    "batch_async",
    "branch",
    "check_ordering",
    "circuit_breaker",
    "current_limiters",
    "current_scope",
    "current_stage",
    "fallback",
    "filter",
    "filter_events",
    "gate",
    "instrumentation",
    "map_async",
    "merge_into_dict",
    "parallel",
    "pipe",
    "rate_limit",
    "reset_shared_limiters",
    "route",
    "run_scope",
    "run_step",
    "shared_limiter",
    "tap",
]
