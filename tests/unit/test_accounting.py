"""Every input is accounted for: filtered is an outcome in the summary, the metrics and a file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamflow import Event, Pipeline, Stage, filter, map_async
from streamflow.cli import main
from streamflow.errors import StepFailed
from streamflow.events import loads
from streamflow.metrics import CollectorRegistry, PipelineMetrics
from streamflow.runtime import run_flow
from streamflow.transports import IterableSource, JsonlSink


class Note(BaseModel):
    id: str
    n: int


async def _judge(event: Event) -> Event:
    n = event.payload_as(Note).n
    if n % 10 == 1:
        raise StepFailed("cannot judge")
    if n % 10 == 2:
        return event.evolve(outcome="review", reason="unsure")
    return event


def _pipeline() -> Pipeline:
    return Pipeline(
        "notes",
        [
            Stage("judge", map_async(_judge, concurrency=4)),
            Stage("keep_even", filter(lambda e: e.payload_as(Note).n % 2 == 0)),
        ],
        input_model=Note,
    )


def _inputs() -> list[bytes]:
    lines = [f'{{"id":"n{i}","n":{i}}}'.encode() for i in range(190)]
    lines += [b"not json"] * 5 + [b'{"id":"x","n":"many"}'] * 5  # dead letters at decode
    return lines


def _expected() -> dict[str, int]:
    # Of 190 good notes: n%10==1 fail (19), n%10==2 go to review (19); of the rest,
    # the odd ones are filtered (n%10 in 3,5,7,9: 76), the even ones answered (76).
    return {"ok": 76, "filtered": 76, "review": 19, "dead_lettered": 19 + 10}


async def test_the_report_accounts_for_every_line_read_and_counts_filtered(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    report = await run_flow(
        _pipeline(),
        IterableSource(_inputs()),
        JsonlSink(tmp_path / "o.jsonl"),
        metrics=PipelineMetrics(registry, "notes"),
    )
    assert report.read == 200
    assert dict(report.outcomes) == _expected()
    assert sum(report.outcomes.values()) == report.read

    def events_total(stage: str, outcome: str) -> float | None:
        return registry.get_sample_value(
            "streamflow_events_total", {"pipeline": "notes", "stage": stage, "outcome": outcome}
        )

    assert events_total("keep_even", "filtered") == 76
    assert events_total("keep_even", "ok") == 76
    assert events_total("judge", "review") == 19
    assert events_total("judge", "failed") == 19


PIPELINE = textwrap.dedent(
    """
    from pydantic import BaseModel
    from streamflow import Pipeline, Stage, filter, map_async

    class Note(BaseModel):
        id: str
        n: int

    async def same(event):
        return event

    pipeline = Pipeline(
        "notes",
        [
            Stage("same", map_async(same)),
            Stage("keep_even", filter(lambda e: e.payload.n % 2 == 0)),
        ],
        input_model=Note,
    )
    """
)


def test_cli_writes_filtered_events_when_asked_and_the_summary_totals_the_lines_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes_pipeline.py").write_text(PIPELINE)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id":"n{i}","n":{i}}}\n' for i in range(20)) + "oops\n")
    out, filtered = tmp_path / "out.jsonl", tmp_path / "filtered.jsonl"
    code = main(
        [
            "run",
            str(tmp_path / "notes_pipeline.py"),
            "-i",
            str(source),
            "-o",
            str(out),
            "--filtered",
            str(filtered),
            "--no-progress",
        ]
    )
    assert code == 0
    kept = [loads(line)["id"] for line in filtered.read_bytes().splitlines()]
    assert sorted(kept) == sorted(f"n{i}" for i in range(1, 20, 2))
    assert all(loads(line)["outcome"] == "filtered" for line in filtered.read_bytes().splitlines())
    assert len(out.read_bytes().splitlines()) == 10
    summary = capsys.readouterr().err
    assert "21 read, 21 accounted for" in summary
    row = re.search(r"all\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)", summary)
    assert row is not None, summary
    assert row.groups() == ("10", "1", "10", "21")  # ok, dead_lettered, filtered, total


def test_filtered_file_is_refused_with_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes_pipeline.py").write_text(PIPELINE)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id":"a","n":1}\n')
    code = main(
        [
            "run",
            str(tmp_path / "notes_pipeline.py"),
            "-i",
            str(source),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--filtered",
            str(tmp_path / "f.jsonl"),
            "--broker",
            "127.0.0.1:1",
        ]
    )
    assert code == 2
    assert "--filtered is for runs in one process" in capsys.readouterr().err


async def test_an_event_the_sink_refused_is_not_counted_as_written() -> None:
    from streamflow.errors import CapacityExceeded
    from streamflow.runtime import run_flow
    from streamflow.transports import CollectingSink, IterableSource

    async def same(event: Event) -> Event:
        return event

    pipeline = Pipeline("refused", [Stage("same", map_async(same))])
    sink = CollectingSink(capacity=2)
    lines = [f'{{"id":"e{i}"}}'.encode() for i in range(5)]
    report = await run_flow(pipeline, IterableSource(lines), sink)

    assert isinstance(report.error, CapacityExceeded)
    # The summary's "ok" is what reached the sink, not what the sink refused.
    assert report.outcomes["ok"] == len(sink.events) == 2
