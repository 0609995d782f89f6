"""`streamflow run`: a whole pipeline in one process, files or stdio in and out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from streamflow.cli._console import print_summary, progress_bar, stderr
from streamflow.metrics import CollectorRegistry, PipelineMetrics, open_metrics_server
from streamflow.runtime import Pipeline, RunReport, run_flow
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
) -> RunReport:
    """Run ``pipeline`` from a JSONL file (or stdin) to a JSONL file (or stdout)."""
    source: Source
    total: int | None = None
    if input_path == "-":
        source = StdinSource()
    else:
        file_source = JsonlFileSource(Path(input_path))
        total = file_source.count_lines()
        source = file_source
    sink = JsonlSink(output_path, dlq=dlq_path)
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, pipeline.name)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if metrics_port is not None:
            server = await stack.enter_async_context(open_metrics_server(registry, metrics_port))
            stderr.print(f"metrics at {server.url}/metrics")
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
            )
        await sink.aclose()
    print_summary(report)
    if output_path != "-":
        stderr.print(
            f"answers: {output_path}  review: {sink.review_path}  dead letters: {sink.dlq_path}"
        )
    return report
