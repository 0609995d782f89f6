"""Which limiter registry a runtime gets: per process, or shared through Redis.

``STREAMFLOW_LIMITER_URL`` unset (the default): model budgets are counted in
this process, so N processes that call one endpoint may send N times its
limit. Set to ``redis://host:port/db``: every process that names the same
endpoint key draws from one budget kept in that Redis.

``STREAMFLOW_LIMITER_GUARD`` (seconds, default 0.05) widens every window by
that much. A limiter counts a call when it is admitted; the endpoint counts
it when it arrives. Jitter between the two (connection set-up when a worker
starts, a busy event loop) larger than the guard can put more than the limit
into one of the endpoint's windows; raise the guard to cover it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from streamflow.errors import ConfigError
from streamflow.ops import InProcessLimiters, LimiterRegistry

__all__ = ["LIMITER_GUARD_VARIABLE", "LIMITER_URL_VARIABLE", "limiters_from_env"]

LIMITER_URL_VARIABLE = "STREAMFLOW_LIMITER_URL"
LIMITER_GUARD_VARIABLE = "STREAMFLOW_LIMITER_GUARD"


def limiters_from_env(environ: Mapping[str, str] | None = None) -> LimiterRegistry:
    """Return a new limiter registry whose backend ``STREAMFLOW_LIMITER_URL`` chooses.

    Nothing connects here; a run connects when it opens the registry.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        An in-process registry, or one backed by the Redis the variable names.

    Raises:
        ConfigError: the URL is not a Redis URL, the ``redis`` extra is missing,
            or the guard is not a number of seconds >= 0.
    """
    env = os.environ if environ is None else environ
    guard = _guard(env)
    url = (env.get(LIMITER_URL_VARIABLE) or "").strip()
    if not url:
        return LimiterRegistry(InProcessLimiters(guard=guard))
    try:
        from streamflow.limits import RedisLimiters
    except ImportError as exc:  # the redis client is an optional extra
        raise ConfigError(
            f"{LIMITER_URL_VARIABLE} needs the Redis client: pip install 'streamflow[redis]' "
            f"({exc})"
        ) from None
    return LimiterRegistry(RedisLimiters(url, guard=guard))


def _guard(env: Mapping[str, str]) -> float | None:
    raw = (env.get(LIMITER_GUARD_VARIABLE) or "").strip()
    if not raw:
        return None
    try:
        guard = float(raw)
    except ValueError:
        guard = -1.0
    if not guard >= 0:  # also refuses nan
        raise ConfigError(
            f"{LIMITER_GUARD_VARIABLE} must be a number of seconds >= 0 (like 0.2), got {raw!r}"
        )
    return guard
