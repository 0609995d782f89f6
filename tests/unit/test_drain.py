"""The end of the input is not a stop: every event in flight finishes, however slow."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from flow_helpers import ListSink, lines

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.cli import main
from streamflow.events import loads
from streamflow.runtime import run_flow
from streamflow.transports import IterableSource


@pytest.mark.looptime
async def test_end_of_input_waits_for_a_step_far_slower_than_the_drain_timeout() -> None:
    async def slow_model(event: Event) -> Event:
        await asyncio.sleep(300)  # virtual seconds
        return event

    pipeline = Pipeline("slow", [Stage("model", map_async(slow_model, concurrency=2))], window=4)
    sink = ListSink()
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await run_flow(pipeline, IterableSource(lines(6)), sink, drain_timeout=1.0)
    assert loop.time() - started >= 900  # three rounds of two, nothing cut short
    assert [e.outcome for e in sink.events] == ["ok"] * 6
    assert report.outcomes == {"ok": 6}
    assert not report.stopped_early


@pytest.mark.looptime
async def test_a_stop_starts_the_drain_timeout_and_abandons_what_is_left() -> None:
    stop = asyncio.Event()

    async def slow_model(event: Event) -> Event:
        await asyncio.sleep(300)
        return event

    pipeline = Pipeline("slow", [Stage("model", map_async(slow_model, concurrency=2))], window=4)
    sink = ListSink()
    loop = asyncio.get_running_loop()
    loop.call_later(10, stop.set)
    report = await run_flow(pipeline, IterableSource(lines(6)), sink, drain_timeout=5.0, stop=stop)
    assert report.stopped_early
    assert report.outcomes["interrupted"] == report.read
    assert len(sink.abandoned) == report.read


SLOW_PIPELINE = textwrap.dedent(
    """
    import asyncio
    from streamflow import Pipeline, Stage, map_async

    async def slow(event):
        await asyncio.sleep(1.0)
        return event

    pipeline = Pipeline("slow", [Stage("slow", map_async(slow, concurrency=4))])
    """
)


def test_cli_run_finishes_a_step_slower_than_the_drain_timeout(tmp_path: Path) -> None:
    (tmp_path / "slow_pipeline.py").write_text(SLOW_PIPELINE)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id":"t{i}"}}\n' for i in range(3)))
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "run",
            str(tmp_path / "slow_pipeline.py"),
            "-i",
            str(source),
            "-o",
            str(out),
            "--drain-timeout",
            "0.1",
            "--no-progress",
        ]
    )
    assert code == 0
    answers = [loads(line)["id"] for line in out.read_bytes().splitlines()]
    assert sorted(answers) == ["t0", "t1", "t2"]
    assert (tmp_path / "out.dlq.jsonl").read_bytes() == b""
