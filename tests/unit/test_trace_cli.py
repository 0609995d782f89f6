"""`streamflow trace ID --input OUT.jsonl`: one event's steps as a timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamflow import DeadLetter, ErrorInfo, Event, StepRecord
from streamflow.cli import main
from streamflow.events import dumps, encode_event, loads


def _record(step: str, at: float, seconds: float, **fields: object) -> StepRecord:
    return StepRecord(step=step, started_at=at, duration_s=seconds, **fields)


ANSWERED = Event(
    id="t-ok",
    key="cust-1",
    payload={"q": "where is my parcel"},
    trace=[
        _record("classify", 100.000, 0.004, model="tfidf-logreg"),
        _record("retrieve", 100.005, 0.010, model="bm25"),
        _record(
            "generate",
            100.020,
            1.250,
            attempt=2,
            model="gpt-4o-mini",
            tokens_in=812,
            tokens_out=96,
            cost_usd=0.00018,
        ),
        _record(
            "check", 101.300, 0.020, model="judge", tokens_in=300, tokens_out=5, cost_usd=0.00005
        ),
    ],
)

FAILED = Event(
    id="t-dead",
    key="cust-2",
    payload={"q": "???"},
    trace=[
        _record("classify", 50.0, 0.002),
        _record("generate", 50.01, 30.0, attempt=3, outcome="failed", detail="StepTimeout"),
    ],
    outcome="failed",
    error=ErrorInfo(type="StepTimeout", message="generate took longer than 30s", step="generate"),
    reason="generate took longer than 30s",
)


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "answers.jsonl"
    out.write_bytes(
        encode_event(ANSWERED.evolve(id="other")) + b"\n" + encode_event(ANSWERED) + b"\n"
    )
    letter = DeadLetter(
        id=FAILED.id, stage="generate", error=FAILED.error, attempts=3, event=FAILED
    )
    (tmp_path / "answers.dlq.jsonl").write_bytes(dumps(letter) + b"\n")
    parked = ANSWERED.evolve(id="t-review", outcome="review", reason="answer cites no passage")
    (tmp_path / "answers.review.jsonl").write_bytes(encode_event(parked) + b"\n")
    return out


def test_trace_prints_every_step_with_offsets_durations_and_totals(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "t-ok", "--input", str(output)]) == 0
    text = capsys.readouterr().out
    for step in ("classify", "retrieve", "generate", "check"):
        assert step in text
    assert "gpt-4o-mini" in text and "812/96" in text and "0.000180" in text
    # generate starts 20 ms after classify and lasts 1,250 ms; check ends at 1,320 ms.
    assert "20.0" in text and "1,250" in text
    total = next(line for line in text.splitlines() if "total" in line)
    assert "1,320" in total and "1,112/101" in total and "0.000230" in total and "4 steps" in total


def test_trace_finds_a_dead_letter_and_shows_its_error(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "t-dead", "-i", str(output)]) == 0
    text = capsys.readouterr().out
    assert "dead letter" in text and "failed" in text
    assert "error in generate: StepTimeout: generate took longer than 30s" in text


def test_trace_finds_an_event_parked_for_review(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "t-review", "-i", str(output)]) == 0
    text = capsys.readouterr().out
    assert "review" in text and "reason: answer cites no passage" in text


def test_trace_json_prints_the_raw_trace(output: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "t-ok", "-i", str(output), "--json"]) == 0
    trace = loads(capsys.readouterr().out)
    assert [r["step"] for r in trace] == ["classify", "retrieve", "generate", "check"]
    assert trace[2]["tokens_in"] == 812 and trace[2]["attempt"] == 2


def test_trace_of_an_unknown_id_is_an_error_with_exit_2(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "nope", "-i", str(output)]) == 2
    assert "no event 'nope'" in capsys.readouterr().err
    assert main(["trace", "t-ok", "-i", str(output.with_name("missing.jsonl"))]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_trace_shows_the_copy_that_went_furthest_after_a_review(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    parked = ANSWERED.evolve(outcome="review", reason="promises a refund")
    decided = ANSWERED.traced(
        _record("review", 200.0, 0.0, outcome="rejected", detail="no refunds"),
    ).traced(_record("generate", 200.1, 0.5, model="gpt-4o-mini"))
    (tmp_path / "answers.review.jsonl").write_bytes(encode_event(parked) + b"\n")
    out.write_bytes(encode_event(decided) + b"\n")
    assert main(["trace", "t-ok", "-i", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rejected by a reviewer: no refunds" in text
    assert "6 steps" in text and "also in: review" in text


def test_trace_shows_every_model_attempt_with_its_tokens_and_why_it_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    attempts = Event(
        id="t-calls",
        payload={"q": "refund"},
        trace=[
            _record(
                "classify",
                10.0,
                0.2,
                outcome="error",
                model="mini",
                detail="model call 1: 429 RateLimited",
            ),
            _record(
                "classify",
                10.3,
                0.4,
                outcome="error",
                model="mini",
                tokens_in=120,
                tokens_out=31,
                cost_usd=0.0002,
                detail="model call 2: 200 ModelOutputInvalid",
            ),
            _record("classify", 10.8, 0.5, model="mini", tokens_in=118, tokens_out=20),
        ],
    )
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode_event(attempts) + b"\n")
    assert main(["trace", "t-calls", "--input", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model call 1: 429 RateLimited" in text
    assert "model call 2: 200 ModelOutputInvalid" in text
    assert "120/31" in text and "238/51" in text  # the invalid answer's tokens count in the total


def test_trace_says_unknown_for_the_cost_of_a_model_without_a_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unpriced = Event(
        id="t-free",
        payload={"q": "refund"},
        trace=[
            _record("classify", 1.0, 0.1, model="house-llama", tokens_in=50, cost_usd=None),
            _record("generate", 1.2, 0.3, model="gpt-4o", tokens_in=10, cost_usd=0.000025),
        ],
    )
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode_event(unpriced) + b"\n")
    assert main(["trace", "t-free", "--input", str(out)]) == 0
    text = capsys.readouterr().out
    assert "unknown" in text
    assert "0.000025 + unknown" in text  # the total does not pretend the unknown cost is 0


def test_trace_reads_a_dead_letter_file_given_as_the_input(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With `--output - --dlq dead.jsonl` the dead-letter file is the only file a run leaves.
    dead = output.with_name("dead.jsonl")
    dead.write_bytes(output.with_name("answers.dlq.jsonl").read_bytes())
    assert main(["trace", "t-dead", "-i", str(dead)]) == 0
    text = capsys.readouterr().out
    assert "dead letter" in text
    assert "error in generate: StepTimeout: generate took longer than 30s" in text
