"""The baseline: the asyncio pipeline a competent engineer would write by hand.

Bounded ``asyncio.Queue`` between steps, a fixed pool of worker tasks per
step, plain dicts decoded and encoded with orjson once per event.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bench.workloads import Workload, input_lines, make_step, percentile

__all__ = ["run_handwritten"]

Item = tuple[float, Any]


async def run_handwritten(workload: Workload) -> dict[str, Any]:
    """Push ``workload.events`` events through the hand-written pipeline.

    Returns:
        events/s, p50/p99 end-to-end latency (ms) and the event count.
    """
    steps = [make_step(ms, f"s{i}") for i, ms in enumerate(workload.latencies_ms)]
    queues: list[asyncio.Queue[Item]] = [
        asyncio.Queue(maxsize=workload.concurrency) for _ in range(len(steps) + 1)
    ]
    latencies: list[float] = []

    async def feed() -> None:
        for line in input_lines(workload.events):
            event = orjson.loads(line)
            await queues[0].put((time.perf_counter(), event))

    async def work(step: Any, inbox: asyncio.Queue[Item], outbox: asyncio.Queue[Item]) -> None:
        while True:
            started, event = await inbox.get()
            result = await step(event)
            await outbox.put((started, result))

    async def drain() -> None:
        for _ in range(workload.events):
            started, event = await queues[-1].get()
            orjson.dumps(event)
            latencies.append(time.perf_counter() - started)

    t0 = time.perf_counter()
    workers = [
        asyncio.create_task(work(step, queues[i], queues[i + 1]))
        for i, step in enumerate(steps)
        for _ in range(workload.concurrency)
    ]
    feeder = asyncio.create_task(feed())
    await drain()
    elapsed = time.perf_counter() - t0
    await feeder
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return {
        "events": len(latencies),
        "eps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }
