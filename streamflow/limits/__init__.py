"""Model budgets shared between processes: limiter backends that count outside one process.

The operator algebra (:mod:`streamflow.ops`) counts budgets in this process
(:class:`~streamflow.ops.RateLimiter`); the backends here keep them where
every process that names an endpoint can reach them. The runtime picks one
from ``STREAMFLOW_LIMITER_URL``. The Redis backend needs the ``redis``
extra (``pip install 'streamflow[redis]'``); nothing imports this package
unless that variable names a Redis.
"""

from streamflow.limits._redis import DEFAULT_PREFIX, RedisLimiter, RedisLimiters

__all__ = ["DEFAULT_PREFIX", "RedisLimiter", "RedisLimiters"]
