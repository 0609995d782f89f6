"""Overload: offer far more events than a slow step can take and watch memory stay flat.

The slow step handles about concurrency / latency = 100 / 5 ms = 20,000
events/s; the source is a generator that makes events as fast as it is
allowed to, so only the credit window stands between it and the heap.
"""

from __future__ import annotations

from typing import Any

from bench.flow import run_streamflow
from bench.workloads import Workload

__all__ = ["OVERLOAD_SIZES", "run_overload"]

OVERLOAD_SIZES = (20_000, 500_000)


async def run_overload(events: int) -> dict[str, Any]:
    """Offer ``events`` events to a one-stage pipeline with a ~20k/s step."""
    workload = Workload("overload", (5.0,), events, concurrency=100)
    return await run_streamflow(workload, keep_latencies=False)
