"""`streamflow run` and `graph` through main(argv), as a user types them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streamflow.cli import main
from streamflow.events import loads

PIPELINE = textwrap.dedent(
    """
    import asyncio
    from pydantic import BaseModel
    from streamflow import Pipeline, Stage, map_async, route

    class Note(BaseModel):
        id: str
        kind: str

    async def shout(event):
        await asyncio.sleep(0)
        note = event.payload_as(Note)
        return event.with_payload({"id": note.id, "kind": note.kind, "text": note.kind.upper()})

    async def keep(event):
        return event

    def by_kind(event):
        return event.payload["kind"]

    pipeline = Pipeline(
        "notes",
        [
            Stage("shout", map_async(shout, concurrency=4)),
            Stage("sort", route(by_kind, {"a": map_async(keep), "b": map_async(keep)})),
        ],
        input_model=Note,
        summary_field="kind",
    )
    """
)


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes_pipeline.py"
    path.write_text(PIPELINE)
    return path


def test_run_writes_answers_and_dead_letters_and_prints_a_summary(
    pipeline_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id":"1","kind":"a"}\n{"id":"2","kind":"b"}\n{"id":"3"}\noops\n')
    out = tmp_path / "out" / "notes.jsonl"
    code = main(["run", str(pipeline_file), "-i", str(source), "-o", str(out), "--no-progress"])
    assert code == 0
    answers = [loads(line) for line in out.read_text().splitlines()]
    assert sorted(a["payload"]["text"] for a in answers) == ["A", "B"]
    letters = (tmp_path / "out" / "notes.dlq.jsonl").read_text().splitlines()
    assert len(letters) == 2
    summary = capsys.readouterr().err
    assert "latency per stage" in summary and "shout" in summary and "events/s" in summary


def test_graph_prints_a_mermaid_flowchart_with_stages_and_branches(
    pipeline_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", str(pipeline_file)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("flowchart LR")
    assert "stage shout" in text and '"a"' in text and '"b"' in text and "notes.dlq" in text


def test_module_attribute_reference_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mynotes.py").write_text(PIPELINE.replace("pipeline = ", "notes = "))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["graph", "mynotes:notes"]) == 0
    assert "flowchart" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.py", "-i", "x", "-o", "y"], "does not exist"),
        (["run", "{pipeline}", "-o", "y"], "Missing option '--input'"),
        (
            ["run", "{pipeline}", "-i", "nope.jsonl", "-o", "y"],
            "input file 'nope.jsonl' does not exist",
        ),
        (["graph", "{broken}"], "failed to load: SyntaxError"),
        (["graph", "{pipeline}:nothing"], "no attribute 'nothing'"),
        (["graph", "json:dumps"], "not a Pipeline"),
        (["graph", "no_such_module_here:x"], "cannot import"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_arguments_print_one_clear_line_and_exit_2(
    argv: list[str],
    message: str,
    pipeline_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    args = [a.format(pipeline=pipeline_file, broken=broken) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert err.startswith("error:")


def test_summary_shows_cost_per_stage_and_per_category() -> None:
    from rich.console import Console

    from streamflow.cli._console import print_summary
    from streamflow.events import Event, StepRecord
    from streamflow.runtime import LatencySketch, RunReport

    report = RunReport("support", window=8, summary_field="category")
    for category, cost in (("billing", 0.25), ("billing", 0.5), ("shipping", 0.125)):
        record = StepRecord(step="generate", started_at=0, duration_s=0.1, model="m", cost_usd=cost)
        report.count("ok", Event(payload={"category": category}, trace=[record]))
    report.stages = {"generate": LatencySketch()}
    report.stage_cost = {"generate": 0.875}
    console = Console(record=True, width=120)
    print_summary(report, console)
    text = console.export_text()
    assert "cost $" in text
    assert "0.7500" in text  # billing
    assert "0.1250" in text  # shipping
    assert "0.8750" in text  # the stage, and the total


def test_an_ordered_stage_runs_in_one_process_and_there_is_no_engine_to_choose(
    pipeline_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id":"{i}","kind":"{"ab"[i % 2]}"}}\n' for i in range(40)))
    ordered = tmp_path / "ordered.py"
    ordered.write_text(PIPELINE.replace("concurrency=4)", "concurrency=4, ordered=True)"))
    out = tmp_path / "o" / "notes.jsonl"
    argv = ["run", str(ordered), "-i", str(source), "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    ids = [a["id"] for a in map(loads, out.read_text().splitlines())]
    assert sorted(ids, key=int) == [str(i) for i in range(40)]
    capsys.readouterr()
    assert main([*argv, "--engine", "stream"]) == 2
    assert "No such option '--engine'" in capsys.readouterr().err
