"""A runtime object, not the process, owns hooks and collector tuning."""

from __future__ import annotations

import asyncio
import gc

from flow_helpers import ListSink, lines

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.metrics import CollectorRegistry, PipelineMetrics
from streamflow.ops import LimiterRegistry, current_scope, instrumentation
from streamflow.runtime import Runtime, run_flow
from streamflow.transports import IterableSource


def _requests(registry: CollectorRegistry, model: str) -> float:
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "streamflow_model_requests_total" and sample.labels["model"] == model:
                total += sample.value
    return total


async def test_two_pipelines_in_one_process_report_to_their_own_metrics() -> None:
    both_running = asyncio.Barrier(2)

    def calling(model: str) -> Pipeline:
        async def call(event: Event) -> Event:
            if event.id.endswith(":1"):
                # Both runs are under way before either reports: no run can
                # see the other's hooks by coming after it.
                await asyncio.wait_for(both_running.wait(), 10)
            instrumentation.report_model_request(model, "200")
            return event

        return Pipeline(f"p-{model}", [Stage("call", map_async(call, concurrency=4))])

    registries = [CollectorRegistry(), CollectorRegistry()]
    await asyncio.gather(
        *(
            run_flow(
                calling(model),
                IterableSource(lines(5), name="in"),
                ListSink(),
                metrics=PipelineMetrics(registry, f"p-{model}"),
            )
            for model, registry in zip(("a", "b"), registries, strict=True)
        )
    )
    assert _requests(registries[0], "a") == 5 and _requests(registries[0], "b") == 0
    assert _requests(registries[1], "b") == 5 and _requests(registries[1], "a") == 0


async def test_runs_share_the_limiter_registry_only_of_the_runtime_they_are_given() -> None:
    seen: list[object] = []

    async def look(event: Event) -> Event:
        scope = current_scope()
        seen.append(scope.limiters if scope is not None else None)
        return event

    pipeline = Pipeline("look", [Stage("look", map_async(look))])
    shared = Runtime(limiters=LimiterRegistry())
    for runtime in (shared, shared, Runtime(limiters=LimiterRegistry())):
        await run_flow(pipeline, IterableSource(lines(1)), ListSink(), runtime=runtime)
    assert seen[0] is seen[1] is shared.limiters
    assert seen[2] is not shared.limiters
    assert current_scope() is None  # nothing is left installed after the runs


async def test_a_library_run_leaves_the_collector_alone_and_a_tuned_runtime_raises_it() -> None:
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []

    async def look(event: Event) -> Event:
        during.append(gc.get_threshold())
        return event

    pipeline = Pipeline("gc", [Stage("look", map_async(look))])
    await run_flow(pipeline, IterableSource(lines(1)), ListSink())
    await run_flow(pipeline, IterableSource(lines(1)), ListSink(), runtime=Runtime(tune_gc=True))
    assert during[0] == before
    assert during[1][0] > before[0]
    assert gc.get_threshold() == before
