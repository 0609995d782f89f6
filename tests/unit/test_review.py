"""`streamflow review` over the files of an in-process run, through main(argv) as users type it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from streamflow import Event, Pipeline, Stage, StepRecord, map_async
from streamflow.cli import main
from streamflow.errors import ConfigError
from streamflow.events import encode_event, loads
from streamflow.runtime.review import (
    ReviewPolicy,
    approved,
    parked_stage,
    reject_target,
    rejected,
    review_round,
)

# triage parks texts it is unsure of; check parks answers that promise a refund.
# The composer writes a refund promise for money questions unless it got feedback.
PIPELINE = textwrap.dedent(
    """
    from operators import generate
    from operators.models import ComposedAnswer
    from streamflow import Pipeline, Stage, map_async
    from streamflow.runtime import ReviewPolicy

    class Composer:
        name = "echo"

        async def compose(self, question, *, category, passages, feedback=None):
            if feedback:
                text = f"Revised ({feedback})"
            elif "money" in question:
                text = "We will refund you."
            else:
                text = "Thanks, done."
            cited = [p.id for p in passages]
            return ComposedAnswer(text=text, citations=cited, model="echo", tokens_in=7,
                                  tokens_out=3, cost_usd=0.001)

    async def triage(event):
        text = event.payload["text"]
        payload = {**event.payload, "category": "billing" if "money" in text else "general"}
        if "unsure" in text:
            return event.evolve(payload=payload, outcome="review", reason="unsure of the category")
        return event.with_payload(payload)

    async def lookup(event):
        kb = "kb-" + event.payload["category"]
        passage = {"id": kb, "title": "Policy", "text": "policy", "score": 1.0}
        return event.with_payload({**event.payload, "passages": [passage]})

    async def check(event):
        answer = event.payload["answer"]["text"]
        if "refund" in answer:
            return event.evolve(outcome="review", reason="promises a refund")
        return event.with_payload({**event.payload, "check": {"outcome": "pass", "reasons": []}})

    pipeline = Pipeline(
        "helpdesk",
        [
            Stage("triage", map_async(triage, name="triage")),
            Stage("lookup", map_async(lookup, name="lookup")),
            Stage("generate", generate(Composer(), question_fields=["text"],
                                       category_field="category")),
            Stage("check", map_async(check, name="check")),
        ],
        key_field="customer",
        summary_field="category",
        review=ReviewPolicy(rework_stage="generate", feedback_field="check"),
    )
    """
)

TICKETS = [
    {"id": "t1", "customer": "c1", "text": "I want my money back"},
    {"id": "t2", "customer": "c2", "text": "hello there"},
    {"id": "t3", "customer": "c3", "text": "unsure about the money"},
    {"id": "t4", "customer": "c4", "text": "more money please"},
]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def run_files(tmp_path: Path) -> tuple[str, Path]:
    """Run the helpdesk pipeline once; return its file and the output path."""
    pipeline = tmp_path / "helpdesk_pipeline.py"
    pipeline.write_text(PIPELINE)
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            f'{{"id":"{t["id"]}","customer":"{t["customer"]}","text":"{t["text"]}"}}\n'
            for t in TICKETS
        )
    )
    out = tmp_path / "out" / "helpdesk.jsonl"
    code = main(["run", str(pipeline), "-i", str(source), "-o", str(out), "--no-progress"])
    assert code == 0
    assert {e["id"] for e in _jsonl(out)} == {"t2"}
    return str(pipeline), out


def _pending(
    pipeline: str, out: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, dict[str, Any]]:
    capsys.readouterr()
    assert main(["review", "list", pipeline, "--output", str(out), "--json"]) == 0
    return {row["id"]: row for row in loads(capsys.readouterr().out)}


def _review_record(event: dict[str, Any]) -> dict[str, Any]:
    records: list[dict[str, Any]] = [r for r in event["trace"] if r["step"] == "review"]
    assert records, "no review record in the trace"
    return records[-1]


def test_list_shows_undecided_events_with_category_stage_reason_and_answer(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    rows = _pending(pipeline, out, capsys)
    assert set(rows) == {"t1", "t3", "t4"}
    assert rows["t1"]["category"] == "billing"
    assert rows["t1"]["key"] == "c1"
    assert rows["t1"]["stage"] == "check"
    assert rows["t1"]["reason"] == "promises a refund"
    assert rows["t1"]["answer"] == "We will refund you."
    assert rows["t3"]["stage"] == "triage" and rows["t3"]["answer"] is None

    assert main(["review", "list", pipeline, "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert "3 waiting for review" in table
    for text in ("t1", "t3", "t4", "promises a refund", "unsure of the category", "category"):
        assert text in table


def test_approve_writes_the_event_to_the_output_with_a_review_record(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    code = main(["review", "approve", "t1", pipeline, "-o", str(out), "--note", "fine by policy"])
    assert code == 0
    assert "t1: approved, sent to the output" in capsys.readouterr().out
    answers = {e["id"]: e for e in _jsonl(out)}
    assert answers["t1"]["outcome"] == "ok"
    assert answers["t1"]["reason"] is None
    assert answers["t1"]["payload"]["answer"]["text"] == "We will refund you."
    record = _review_record(answers["t1"])
    assert (record["outcome"], record["detail"]) == ("approved", "fine by policy")
    assert "t1" not in _pending(pipeline, out, capsys)
    decisions = _jsonl(out.with_name("helpdesk.decisions.jsonl"))
    assert [(d["id"], d["decision"], d["note"]) for d in decisions] == [
        ("t1", "approved", "fine by policy")
    ]
    assert isinstance(decisions[0]["at"], float)


def test_reject_reruns_generate_with_the_note_as_feedback(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    code = main(
        ["review", "reject", "t4", pipeline, "-o", str(out), "--note", "offer a callback instead"]
    )
    assert code == 0
    assert "t4: rejected, sent to stage generate; it came out ok" in capsys.readouterr().out
    answers = {e["id"]: e for e in _jsonl(out)}
    event = answers["t4"]
    assert event["outcome"] == "ok"
    assert event["payload"]["answer"]["text"] == "Revised (reviewer: offer a callback instead)"
    steps = [r["step"] for r in event["trace"]]
    # The first pass, the decision, then generate and check once more (not triage or lookup).
    assert steps == ["triage", "lookup", "generate", "check", "review", "generate", "check"]
    assert _review_record(event)["outcome"] == "rejected"
    assert "t4" not in _pending(pipeline, out, capsys)


def test_reject_of_an_event_parked_before_the_rework_stage_runs_the_stages_it_missed(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    code = main(["review", "reject", "t3", pipeline, "-o", str(out), "--note", "it is billing"])
    assert code == 0
    assert "sent to stage lookup" in capsys.readouterr().out
    event = {e["id"]: e for e in _jsonl(out)}["t3"]
    assert [r["step"] for r in event["trace"]] == [
        "triage",
        "review",
        "lookup",
        "generate",
        "check",
    ]
    assert event["payload"]["passages"][0]["id"] == "kb-billing"
    assert event["payload"]["answer"]["text"] == "Revised (reviewer: it is billing)"


def test_an_event_back_in_review_after_a_decision_can_be_decided_again(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    # Approving t3 lets it go on from lookup; its money question earns a refund promise,
    # so check parks it again: a new round.
    assert main(["review", "approve", "t3", pipeline, "-o", str(out)]) == 0
    assert "it came out review (promises a refund)" in capsys.readouterr().out
    rows = _pending(pipeline, out, capsys)
    assert rows["t3"]["stage"] == "check"
    assert main(["review", "approve", "t3", pipeline, "-o", str(out)]) == 0
    assert "t3" not in _pending(pipeline, out, capsys)
    event = {e["id"]: e for e in _jsonl(out)}["t3"]
    assert [r["outcome"] for r in event["trace"] if r["step"] == "review"] == [
        "approved",
        "approved",
    ]


def test_a_second_decision_on_the_same_event_is_refused(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    assert main(["review", "approve", "t1", pipeline, "-o", str(out)]) == 0
    lines_before = len(_jsonl(out))
    capsys.readouterr()
    code = main(["review", "reject", "t1", pipeline, "-o", str(out), "--note", "too late"])
    assert code == 2
    err = capsys.readouterr().err
    assert "already approved" in err and len(err.strip().splitlines()) == 1
    assert len(_jsonl(out)) == lines_before


def test_unknown_id_is_a_one_line_error_with_exit_2(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    capsys.readouterr()
    assert main(["review", "approve", "nope", pipeline, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no event 'nope'") and len(err.strip().splitlines()) == 1


def test_reject_needs_a_note_and_review_needs_a_queue(
    run_files: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline, out = run_files
    assert main(["review", "reject", "t1", pipeline, "-o", str(out)]) == 2
    assert "--note" in capsys.readouterr().err
    monkeypatch.delenv("STREAMFLOW_BROKER", raising=False)
    assert main(["review", "list", pipeline]) == 2
    assert "--output" in capsys.readouterr().err


# -- the decisions themselves ---------------------------------------------------------


async def _keep(event: Event) -> Event:
    return event


def _pipeline(*names: str, rework: str | None = None) -> Pipeline:
    return Pipeline(
        "decisions",
        [Stage(n, map_async(_keep, name=n)) for n in names],
        review=ReviewPolicy(rework_stage=rework) if rework else None,
    )


def _parked(*steps: str) -> Event:
    trace = [StepRecord(step=s, started_at=float(i), duration_s=0.1) for i, s in enumerate(steps)]
    return Event(id="e", payload={"q": "x"}, trace=trace, outcome="review", reason="look")


def test_without_a_policy_a_rejection_reruns_the_parking_stage_and_a_bad_policy_fails() -> None:
    # The framework knows no stage called generate: without a policy, the stage that
    # parked the event runs again.
    plain = _pipeline("classify", "generate", "check")
    assert reject_target(plain, _parked("classify", "generate", "check")) == "check"
    assert reject_target(plain, _parked("classify")) == "classify"
    assert reject_target(plain, _parked("elsewhere")) == "classify"
    with pytest.raises(ConfigError, match="rework_stage 'draft' is not a stage"):
        _pipeline("classify", "check", rework="draft")


def test_rejected_writes_the_note_where_the_policy_says_and_clears_the_review() -> None:
    event = _parked("classify", "generate", "check")
    default = rejected(event, "shorter please")
    assert default.payload["feedback"] == {
        "outcome": "fail",
        "reasons": ["reviewer: shorter please"],
    }
    assert "check" not in default.payload
    event = event.evolve(payload={"q": "x", "check": {"outcome": "review", "reasons": ["weak"]}})
    changed = rejected(event, "shorter please", feedback_field="check")
    assert changed.payload["check"] == {"outcome": "fail", "reasons": ["reviewer: shorter please"]}
    assert (changed.outcome, changed.reason, changed.error) == ("ok", None, None)
    assert changed.trace[-1].step == "review" and changed.trace[-1].outcome == "rejected"
    assert review_round(changed) == 1 and review_round(event) == 0
    with pytest.raises(ConfigError, match="needs a note"):
        rejected(event, "  ")


def test_approved_keeps_the_payload_and_records_the_note() -> None:
    changed = approved(_parked("classify", "check"), "ok")
    assert changed.payload == {"q": "x"}
    assert changed.outcome == "ok" and changed.trace[-1].detail == "ok"


def test_parked_stage_and_reject_target_follow_the_trace() -> None:
    pipeline = _pipeline("classify", "retrieve", "generate", "check", rework="generate")
    late = _parked("classify", "retrieve", "generate", "check")
    early = _parked("classify")
    assert parked_stage(pipeline, late) == "check"
    assert reject_target(pipeline, late) == "generate"
    assert parked_stage(pipeline, early) == "classify"
    assert reject_target(pipeline, early) == "retrieve"
    assert parked_stage(pipeline, _parked("elsewhere")) is None
    assert reject_target(pipeline, _parked("elsewhere")) == "generate"


# -- reruns onto the same files ---------------------------------------------------------


def test_a_rerun_onto_the_same_output_parks_events_that_can_be_decided_again(
    run_files: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, out = run_files
    assert main(["review", "approve", "t1", pipeline, "-o", str(out)]) == 0
    assert main(["review", "reject", "t4", pipeline, "-o", str(out), "--note", "callback"]) == 0
    source = out.parent.parent / "in.jsonl"
    argv = ["run", pipeline, "-i", str(source), "-o", str(out), "--no-progress"]

    # The same tickets again: t1 and t4 are parked afresh and wait for a new decision.
    assert main([*argv, "--overwrite"]) == 0
    assert set(_pending(pipeline, out, capsys)) == {"t1", "t3", "t4"}
    assert main(["review", "approve", "t1", pipeline, "-o", str(out)]) == 0
    assert "t1: approved" in capsys.readouterr().out
    assert set(_pending(pipeline, out, capsys)) == {"t3", "t4"}

    # Appended: each event is listed once, at its latest parking, and still decidable.
    assert main([*argv, "--append"]) == 0
    assert set(_pending(pipeline, out, capsys)) == {"t1", "t3", "t4"}
    assert main(["review", "reject", "t1", pipeline, "-o", str(out), "--note", "again"]) == 0
    assert "t1: rejected, sent to stage generate" in capsys.readouterr().out
    decisions = _jsonl(out.with_name("helpdesk.decisions.jsonl"))
    assert [(d["id"], d["decision"]) for d in decisions] == [
        ("t1", "approved"),
        ("t4", "rejected"),
        ("t1", "approved"),
        ("t1", "rejected"),
    ]
    assert len({d["parked_at"] for d in decisions if d["id"] == "t1"}) == 3


def test_a_pipeline_without_a_policy_reworks_the_parking_stage_with_payload_feedback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = PIPELINE.replace(
        '    review=ReviewPolicy(rework_stage="generate", feedback_field="check"),\n', ""
    )
    assert plain != PIPELINE
    (tmp_path / "plain.py").write_text(plain)
    (tmp_path / "in.jsonl").write_text('{"id":"t1","customer":"c1","text":"money please"}\n')
    out = tmp_path / "plain.jsonl"
    pipeline = str(tmp_path / "plain.py")
    assert main(["run", pipeline, "-i", str(tmp_path / "in.jsonl"), "-o", str(out)]) == 0
    assert main(["review", "reject", "t1", pipeline, "-o", str(out), "--note", "no refund"]) == 0
    # check parked it, so check runs again; it reads no feedback and parks it again.
    assert "sent to stage check; it came out review" in capsys.readouterr().out
    parked = [e for e in _jsonl(out.with_name("plain.review.jsonl")) if e["id"] == "t1"][-1]
    assert parked["payload"]["feedback"]["reasons"] == ["reviewer: no refund"]
    assert [r["step"] for r in parked["trace"]] == [
        "triage",
        "lookup",
        "generate",
        "check",
        "review",
        "check",
    ]


def test_ids_and_reasons_print_as_text_with_control_characters_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = tmp_path / "helpdesk_pipeline.py"
    pipeline.write_text(PIPELINE)
    out = tmp_path / "helpdesk.jsonl"
    hostile = {
        "T[/bold]1": "unsure [red]money[/red]",
        "T\x1b[31m2": "unsure\x1b]0;title\x07 again\nand a second line",
    }
    parked = [
        Event(
            id=event_id,
            key="c[/]",
            payload={"text": text, "category": "[bold]billing"},
            trace=[StepRecord(step="triage", started_at=1.0, duration_s=0.1)],
            outcome="review",
            reason=text,
        )
        for event_id, text in hostile.items()
    ]
    out.with_name("helpdesk.review.jsonl").write_bytes(
        b"".join(encode_event(event) + b"\n" for event in parked)
    )
    assert main(["review", "list", str(pipeline), "-o", str(out)]) == 0
    table = capsys.readouterr().out
    assert "T[/bold]1" in table and "[/red]" in table and "[bold]billing" in table
    assert "\x1b" not in table and "\x07" not in table
    assert "T\\x1b[31m2" in table and "\\nand a second line" in table

    code = main(["review", "approve", "T\x1b[31m2", str(pipeline), "-o", str(out)])
    assert code == 0
    line = capsys.readouterr().out
    assert "\x1b" not in line and line.startswith("T\\x1b[31m2: approved")


TYPED = textwrap.dedent(
    """
    from pydantic import BaseModel
    from streamflow import Event, Pipeline, Stage, map_async

    class Ticket(BaseModel):
        id: str
        n: int
        feedback: dict | None = None

    def gate(event: Event) -> Event:
        # An envelope step reads the payload as the model, as in the first run.
        if event.payload.n % 3 == 0 and event.payload.feedback is None:
            return event.evolve(outcome="review", reason="multiple of three")
        return event

    def double(t: Ticket) -> Ticket:
        return t.model_copy(update={"n": t.n * 2})

    pipeline = Pipeline(
        "typed", [Stage("gate", map_async(gate)), Stage("double", map_async(double))],
        input_model=Ticket,
    )
    """
)


def test_a_rerun_hands_an_envelope_step_the_payload_model_of_its_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "typed.py").write_text(TYPED)
    (tmp_path / "in.jsonl").write_text('{"id":"t3","n":3}\n')
    out = tmp_path / "typed.jsonl"
    pipeline = str(tmp_path / "typed.py")
    assert main(["run", pipeline, "-i", str(tmp_path / "in.jsonl"), "-o", str(out)]) == 0
    capsys.readouterr()
    # gate parked it, so gate runs again: it must see a Ticket (with the note), not a dict.
    assert main(["review", "reject", "t3", pipeline, "-o", str(out), "--note", "fine"]) == 0
    assert "sent to stage gate; it came out ok" in capsys.readouterr().out
    [answer] = [e for e in _jsonl(out) if e["id"] == "t3"]
    assert answer["payload"]["n"] == 6
    assert answer["payload"]["feedback"]["reasons"] == ["reviewer: fine"]


def test_a_rejection_whose_stage_model_cannot_carry_the_note_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = TYPED.replace("    feedback: dict | None = None\n", "").replace(
        " and event.payload.feedback is None", ""
    )
    assert "feedback" not in source
    (tmp_path / "typed.py").write_text(source)
    (tmp_path / "in.jsonl").write_text('{"id":"t3","n":3}\n')
    out = tmp_path / "typed.jsonl"
    pipeline = str(tmp_path / "typed.py")
    assert main(["run", pipeline, "-i", str(tmp_path / "in.jsonl"), "-o", str(out)]) == 0
    capsys.readouterr()
    # The note would be dropped when the payload is decoded to Ticket: say so, decide nothing.
    assert main(["review", "reject", "t3", pipeline, "-o", str(out), "--note", "fine"]) == 2
    err = capsys.readouterr().err
    assert "Ticket" in err and "feedback" in err
    assert not out.with_name("typed.decisions.jsonl").exists()


def test_a_rerun_writes_through_the_runs_sink_so_its_limits_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The re-run pads the answer past max_record_bytes: as in a run, it must become a
    # dead letter naming the limit, not a line in the output above the limit.
    source = (
        TYPED.replace(
            '        return event.evolve(outcome="review", reason="multiple of three")\n'
            "    return event\n",
            '        return event.evolve(outcome="review", reason="multiple of three")\n'
            "    if event.payload.feedback is not None:\n"
            "        pad = {'feedback': {'pad': 'x' * 5000}}\n"
            "        return event.with_payload(event.payload.model_copy(update=pad))\n"
            "    return event\n",
        )
        .replace(
            "    input_model=Ticket,\n",
            "    input_model=Ticket, limits=RecordLimits(max_record_bytes=4096),\n",
        )
        .replace(
            "from streamflow import Event,",
            "from streamflow.events import RecordLimits\nfrom streamflow import Event,",
        )
    )
    assert "RecordLimits(max_record_bytes=4096)" in source and "'x' * 5000" in source
    (tmp_path / "typed.py").write_text(source)
    (tmp_path / "in.jsonl").write_text('{"id":"t3","n":3}\n')
    out = tmp_path / "typed.jsonl"
    pipeline = str(tmp_path / "typed.py")
    assert main(["run", pipeline, "-i", str(tmp_path / "in.jsonl"), "-o", str(out)]) == 0
    assert main(["review", "reject", "t3", pipeline, "-o", str(out), "--note", "pad it"]) == 0
    assert all(len(line) <= 4096 for line in out.read_bytes().splitlines())
    [letter] = _jsonl(out.with_name("typed.dlq.jsonl"))
    assert letter["id"] == "t3" and "max_record_bytes" in letter["error"]["message"]
