"""Workload definitions shared by every benchmark variant.

A workload is a chain of async steps that stand in for model calls
(``asyncio.sleep`` of a fixed latency), each run with the same concurrency,
fed JSON lines generated on the fly.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "WORKLOADS",
    "Workload",
    "input_lines",
    "make_step",
    "paired_runs",
    "percentile",
    "summarise",
    "verdict",
]

T = TypeVar("T")

_BODY = (
    "My order arrived with a cracked screen and the replacement I was promised last week "
    "never shipped. I have attached the photos again. Please tell me whether I should return "
    "the device or wait for the courier, and whether the refund covers the shipping cost."
)


@dataclass(frozen=True)
class Workload:
    """A named chain of simulated model steps.

    Attributes:
        name: the name printed in the BENCH line.
        latencies_ms: one simulated latency per step (0 yields once).
        events: how many events to push through.
        concurrency: calls in flight per step.
    """

    name: str
    latencies_ms: tuple[float, ...]
    events: int
    concurrency: int = 256


WORKLOADS = {
    "W": Workload("W", (2.0, 5.0, 50.0, 2.0), 5_000),
    "W0": Workload("W0", (0.0, 0.0, 0.0, 0.0), 50_000),
}


def make_step(latency_ms: float, name: str) -> Callable[[T], Awaitable[T]]:
    """Return an async step that waits ``latency_ms`` and hands its input back unchanged.

    The same function object type serves the streamflow and the hand-written
    pipelines, so both pay the same per-call cost inside the step.
    """
    delay = latency_ms / 1000.0

    async def step(event: T) -> T:
        await asyncio.sleep(delay)
        return event

    step.__name__ = name
    return step


def input_lines(count: int) -> Iterator[bytes]:
    """Generate ``count`` JSON lines of support tickets, lazily (no list in memory)."""
    for i in range(count):
        yield (
            b'{"id":"t-%d","customer":"c-%d","subject":"Cracked screen on delivery",'
            b'"priority":"normal","body":"%s"}' % (i, i % 997, _BODY.encode())
        )


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values`` by nearest rank (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarise(results: list[dict[str, Any]], key: str) -> float:
    """Median of ``key`` over repeated runs (the machine is shared and noisy)."""
    return float(statistics.median(r[key] for r in results))


def paired_runs(
    repeats: int,
    run: Callable[[str], dict[str, Any]],
    show: Callable[[int, str, dict[str, Any]], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float]]:
    """Run ``streamflow`` and ``handwritten`` ``repeats`` times, alternating which goes first.

    Args:
        repeats: pairs to run.
        run: runs one variant by kind and returns its result (with ``eps``).
        show: prints one result as (pair number from 1, kind, result).

    Returns:
        The streamflow results, the baseline results, and each pair's ratio of events/s.
    """
    flows: list[dict[str, Any]] = []
    hands: list[dict[str, Any]] = []
    ratios: list[float] = []
    for i in range(repeats):
        order = ("streamflow", "handwritten") if i % 2 == 0 else ("handwritten", "streamflow")
        pair = {kind: run(kind) for kind in order}
        for kind in order:
            show(i + 1, kind, pair[kind])
        flows.append(pair["streamflow"])
        hands.append(pair["handwritten"])
        ratios.append(pair["streamflow"]["eps"] / pair["handwritten"]["eps"])
    return flows, hands, ratios


def verdict(ok: bool) -> str:
    """PASS or FAIL, for a BENCH line."""
    return "PASS" if ok else "FAIL"
