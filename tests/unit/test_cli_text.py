"""What the command line prints from input records is text: never markup, never raw escapes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streamflow.cli import main
from streamflow.events import ErrorInfo, Event, StepRecord, dumps, encode_event

PIPELINE = textwrap.dedent(
    """
    from streamflow import Pipeline, Stage, map_async

    async def keep(event):
        return event

    pipeline = Pipeline("labels", [Stage("keep", map_async(keep, name="keep"))],
                        summary_field="kind")
    """
)

HOSTILE = "T[/bold]1\x1b[31m"


def test_summary_groups_from_payloads_print_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "labels.py").write_text(PIPELINE)
    source = tmp_path / "in.jsonl"
    source.write_bytes(dumps({"id": "a", "kind": HOSTILE}) + b"\n")
    out = tmp_path / "out.jsonl"
    argv = ["run", str(tmp_path / "labels.py"), "-i", str(source), "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "T[/bold]1\\x1b[31m" in err and "\x1b" not in err


def test_trace_prints_ids_steps_reasons_and_errors_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = Event(
        id=HOSTILE,
        key="[red]k",
        payload={"q": "x"},
        trace=[
            StepRecord(step="[bold]step", started_at=1.0, duration_s=0.1, model="m[/]"),
            StepRecord(
                step="review", started_at=2.0, duration_s=0.0, outcome="rejected", detail="[/x]"
            ),
        ],
        outcome="review",
        reason="unsure\x07[/i]",
        error=ErrorInfo(type="ValueError", message="bad [/red] value\x1b]0;t\x07", step="s"),
    )
    output = tmp_path / "out.jsonl"
    output.write_bytes(b"")
    (tmp_path / "out.review.jsonl").write_bytes(encode_event(event) + b"\n")
    assert main(["trace", HOSTILE, "-i", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed
    for text in ("T[/bold]1\\x1b[31m", "[bold]step", "m[/]", "[/x]", "unsure\\x07[/i]"):
        assert text in printed, text
    assert "bad [/red] value\\x1b]0;t\\x07" in printed


def test_an_error_is_one_line_whatever_it_quotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fatal.py").write_text(
        textwrap.dedent(
            """
            from reactivex import operators as rx
            from streamflow import Pipeline, Stage

            def boom(event):
                raise RuntimeError("broke\\nbadly\\x1b[31m")

            pipeline = Pipeline("fatal", [Stage("boom", rx.map(boom))])
            """
        )
    )
    (tmp_path / "in.jsonl").write_text('{"id":"1"}\n')
    argv = ["run", str(tmp_path / "fatal.py"), "-i", str(tmp_path / "in.jsonl")]
    assert main([*argv, "-o", str(tmp_path / "out.jsonl"), "--no-progress"]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == "error: run stopped: RuntimeError: broke\\nbadly\\x1b[31m"
