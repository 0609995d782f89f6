"""`streamflow run`: a whole pipeline in one process, files or stdio in and out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from streamflow.cli._console import print_summary, progress_bar, stderr
from streamflow.metrics import DEFAULT_HOST, CollectorRegistry, PipelineMetrics, open_metrics_server
from streamflow.runtime import Pipeline, RunReport, Runtime, run_flow
from streamflow.transports import JsonlFileSource, JsonlSink, Source, StdinSource

__all__ = ["run_in_process", "stop_on_signals"]


@contextlib.asynccontextmanager
async def stop_on_signals(stop: asyncio.Event) -> AsyncIterator[None]:
    """Set ``stop`` on the first SIGINT/SIGTERM; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stderr.print(f"[yellow]{signal.Signals(signum).name}: stopping, draining in-flight work")
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handle, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_in_process(
    pipeline: Pipeline,
    *,
    input_path: str,
    output_path: str,
    dlq_path: str | None,
    metrics_port: int | None,
    progress: bool,
    window: int | None,
    drain_timeout: float,
    review_path: str | None = None,
    append: bool = False,
    metrics_host: str = DEFAULT_HOST,
    filtered_path: str | None = None,
) -> RunReport:
    """Run ``pipeline`` from a JSONL file (or stdin) to a JSONL file (or stdout).

    The result files are written aside and moved into place when the run ends
    (or appended to, with ``append``); check them first with ``plan_outputs``.
    """
    source: Source
    total: int | None = None
    if input_path == "-":
        source = StdinSource()
    else:
        file_source = JsonlFileSource(Path(input_path))
        total = file_source.count_lines()
        source = file_source
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, pipeline.name)
    stop = asyncio.Event()
    # The CLI owns its process, so it may tune the garbage collector.
    runtime = Runtime(tune_gc=True)
    async with contextlib.AsyncExitStack() as stack:
        # A model budget whose Redis does not answer fails here, before any result file exists.
        await stack.enter_async_context(runtime.limiters.opened())
        if metrics_port is not None:
            server = await stack.enter_async_context(
                open_metrics_server(registry, metrics_port, host=metrics_host)
            )
            stderr.print(f"metrics at {server.url}/metrics", markup=False)
        sink = JsonlSink(
            output_path,
            dlq=dlq_path,
            review=review_path,
            append=append,
            atomic=not append,
            filtered=filtered_path,
            limits=pipeline.limits,
        )
        # Whatever happens, what was written is kept: dead letters are results too.
        stack.push_async_callback(sink.aclose)
        await stack.enter_async_context(stop_on_signals(stop))
        with progress_bar(total, progress and output_path != "-") as update:
            on_progress: Callable[[RunReport], None] = update
            report = await run_flow(
                pipeline,
                source,
                sink,
                metrics=metrics,
                window=window,
                drain_timeout=drain_timeout,
                stop=stop,
                on_progress=on_progress,
                runtime=runtime,
            )
    print_summary(report)
    answers = "stdout" if output_path == "-" else output_path
    filtered = f"  filtered: {sink.filtered_path}" if sink.filtered_path is not None else ""
    stderr.print(
        f"answers: {answers}  review: {sink.review_path}  dead letters: {sink.dlq_path}" + filtered,
        markup=False,
    )
    return report
