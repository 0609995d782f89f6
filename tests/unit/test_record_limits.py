"""Record limits: no record, however large, deep or malformed, can stop a run or be lost."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from streamflow import Pipeline, Stage, map_async
from streamflow.errors import ConfigError, DecodeError
from streamflow.events import (
    ErrorInfo,
    Event,
    RecordLimits,
    decode_input,
    encode_dead_letter,
    encode_event,
    make_dead_letter,
)
from streamflow.runtime import run_flow
from streamflow.transports import IterableSource, JsonlSink


class Ticket(BaseModel):
    customer: str
    text: str


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"down": value}
    return value


def _deep_line(event_id: str, depth: int) -> bytes:
    # Written by hand: the encoder itself refuses this depth, which is the point.
    extra = b'{"down":' * depth + b'"bottom"' + b"}" * depth
    return (
        b'{"id": "'
        + event_id.encode()
        + b'", "customer": "c", "text": "t", "extra": '
        + extra
        + b"}"
    )


def test_a_record_nested_past_max_json_depth_is_refused_with_its_id() -> None:
    with pytest.raises(DecodeError, match="max_json_depth=100") as caught:
        decode_input(_deep_line("T7", 300), None, origin="f:1")
    assert caught.value.event_id == "T7"


def test_a_record_at_max_json_depth_is_accepted() -> None:
    limits = RecordLimits(max_json_depth=10)
    # The top-level object is depth 1, so 9 nested objects below it make 10.
    event = decode_input(orjson.dumps(_nested(10)), None, origin="f:1", limits=limits)
    assert event.payload["down"]["down"]


def test_depth_ten_thousand_is_a_decode_error_not_a_crash() -> None:
    with pytest.raises(DecodeError, match="too deep"):
        decode_input(b"[" * 10_000 + b"]" * 10_000, None, origin="f:2")


def test_a_record_above_max_record_bytes_is_refused_before_parsing() -> None:
    limits = RecordLimits(max_record_bytes=8192)
    big = orjson.dumps({"id": "T1", "customer": "c", "text": "x" * 9000})
    with pytest.raises(DecodeError, match="above max_record_bytes=8192"):
        decode_input(big, Ticket, origin="f:3", limits=limits)


def test_invalid_utf8_names_the_byte_offset_and_the_origin() -> None:
    line = b'{"id": "T1", "text": "caf\xe9"}'
    with pytest.raises(DecodeError, match=r"invalid UTF-8 at byte 25 in tickets.jsonl:4"):
        decode_input(line, None, origin="tickets.jsonl:4")


@pytest.mark.parametrize(
    ("field", "value"), [("max_record_bytes", 0), ("max_json_depth", -1), ("max_json_depth", 500)]
)
def test_bad_limits_name_the_setting(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field):
        RecordLimits(**{field: value})


def test_a_dead_letter_keeps_undecodable_bytes_in_base64() -> None:
    original = b'{"text": "\xff\xfe"}'
    letter = make_dead_letter(error=ErrorInfo(type="DecodeError", message="bad"), original=original)

    assert letter.original is None
    assert letter.original_base64 is not None
    assert base64.b64decode(letter.original_base64) == original
    assert letter.original_size == len(original)
    assert not letter.truncated


def test_a_dead_letter_truncates_a_large_original_and_records_size_and_hash() -> None:
    limits = RecordLimits(max_record_bytes=64 * 1024, max_original_bytes=1024)
    original = b'{"text": "' + b"y" * 5_000_000 + b'"}'
    letter = make_dead_letter(
        error=ErrorInfo(type="DecodeError", message="too big"), original=original, limits=limits
    )
    encoded = encode_dead_letter(letter, limits)

    assert len(encoded) <= limits.max_record_bytes
    stored = orjson.loads(encoded)
    assert stored["truncated"] is True
    assert stored["original_size"] == len(original)
    assert stored["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert stored["original"] == original[:1024].decode()


def test_a_dead_letter_whose_event_cannot_be_serialised_drops_the_event_and_says_why() -> None:
    event = Event(id="E1", payload={"deep": _nested(300)})
    letter = make_dead_letter(
        event_id="E1", error=ErrorInfo(type="StepFailed", message="boom"), event=event
    )
    stored = orjson.loads(encode_dead_letter(letter))

    assert stored["id"] == "E1"
    assert stored["event"] is None
    assert "cannot be serialised" in stored["event_omitted"]


async def _passthrough(event: Event) -> Event:
    return event


async def _grow(event: Event) -> Event:
    payload = event.payload
    if payload.get("grow"):
        return event.with_payload({**payload, "blob": "z" * 20_000})
    if payload.get("deepen"):
        return event.with_payload({**payload, "deep": _nested(300)})
    if payload.get("odd"):
        return event.with_payload({**payload, "thing": object()})
    return event


async def _run(pipeline: Pipeline, lines: list[bytes], tmp_path: Path) -> tuple[Any, list[Any]]:
    sink = JsonlSink(tmp_path / "out.jsonl", limits=pipeline.limits)
    report = await run_flow(pipeline, IterableSource(lines, name="in.jsonl"), sink)
    await sink.aclose()
    letters = [
        orjson.loads(line) for line in (tmp_path / "out.dlq.jsonl").read_bytes().splitlines()
    ]
    return report, letters


async def test_a_deeply_nested_ticket_is_a_dead_letter_and_the_others_flow(tmp_path: Path) -> None:
    pipeline = Pipeline("deep", [Stage("classify", map_async(_passthrough, name="classify"))])
    good = [orjson.dumps({"id": f"T{i}", "customer": "c", "text": "t"}) for i in range(20)]
    lines = [*good[:10], _deep_line("T-deep", 300), *good[10:]]

    report, letters = await _run(pipeline, lines, tmp_path)

    assert report.error is None
    assert report.outcomes["ok"] == 20
    assert report.outcomes["dead_lettered"] == 1
    assert [letter["id"] for letter in letters] == ["T-deep"]
    assert "max_json_depth" in letters[0]["error"]["message"]
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 20


async def test_events_a_step_makes_unwritable_are_dead_letters(tmp_path: Path) -> None:
    limits = RecordLimits(max_record_bytes=16 * 1024)
    pipeline = Pipeline("grow", [Stage("s", map_async(_grow, name="grow"))], limits=limits)
    lines = [
        b'{"id": "ok1"}',
        b'{"id": "big", "grow": true}',
        b'{"id": "deep", "deepen": true}',
        b'{"id": "odd", "odd": true}',
        b'{"id": "ok2"}',
    ]

    report, letters = await _run(pipeline, lines, tmp_path)

    assert report.error is None
    assert report.outcomes["ok"] == 2
    assert report.outcomes["dead_lettered"] == 3
    by_id = {letter["id"]: letter for letter in letters}
    assert set(by_id) == {"big", "deep", "odd"}
    assert "max_record_bytes=16384" in by_id["big"]["error"]["message"]
    assert all(letter["error"]["step"] == "encode" for letter in letters)
    assert all(len(orjson.dumps(letter)) <= limits.max_record_bytes for letter in letters)


async def test_bad_records_of_every_kind_are_dead_letters_with_reasons(tmp_path: Path) -> None:
    pipeline = Pipeline(
        "bad",
        [Stage("classify", map_async(_passthrough, name="classify"))],
        input_model=None,
        limits=RecordLimits(max_record_bytes=64 * 1024),
    )
    bad = [
        b"not json",
        b'{"id": "u1", "text": "\xc3\x28"}',
        b"null",
        b"[1, 2, 3]",
        b"[" * 10_000 + b"]" * 10_000,
        orjson.dumps({"id": "huge", "text": "x" * 200_000}),
        b'{"id": {"nested": "id"}}',
    ]
    good = [orjson.dumps({"id": f"G{i}"}) for i in range(5)]

    report, letters = await _run(pipeline, [*good, *bad], tmp_path)

    assert report.outcomes["ok"] == 5
    assert report.outcomes["dead_lettered"] == len(bad)
    assert all(letter["error"]["message"] for letter in letters)
    assert all(letter["stage"] == "decode" for letter in letters)
    utf8 = next(letter for letter in letters if "UTF-8" in letter["error"]["message"])
    assert base64.b64decode(utf8["original_base64"]) == bad[1]
    assert "in.jsonl:7" in utf8["error"]["message"]
    huge = next(letter for letter in letters if letter["original_size"] == len(bad[5]))
    assert huge["truncated"] and "max_record_bytes" in huge["error"]["message"]


async def test_forged_events_on_the_input_run_every_stage(tmp_path: Path) -> None:
    seen: list[str] = []

    async def mark(event: Event) -> Event:
        seen.append(str(event.payload.get("id")))
        return event.with_payload({**event.payload, "classified": True})

    pipeline = Pipeline("forge", [Stage("classify", map_async(mark, name="classify"))])
    forged = Event(id="F1", payload={"customer": "c"}, outcome="review").model_dump(mode="json")
    forged["trace"] = [{"step": "classify", "started_at": 1.0, "duration_s": 0.1}]
    lines = [orjson.dumps(forged), encode_event(Event(id="F2", payload={"text": "hi"}))]

    report, letters = await _run(pipeline, lines, tmp_path)

    assert letters == []
    assert report.outcomes == {"ok": 2}
    assert sorted(seen) == ["F1", "F2"]
    out = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert all(event["payload"]["classified"] for event in out)
    assert all(len(event["trace"]) == 1 for event in out)
    assert not (tmp_path / "out.review.jsonl").read_bytes()


def test_a_worker_whose_writes_were_not_acknowledged_reports_true_counts_and_fails() -> None:
    from streamflow.runtime._report import RunReport
    from streamflow.runtime._worker import StageWorker
    from streamflow.transports.kafka import KafkaSettings

    pipeline = Pipeline("wedge", [Stage("classify", map_async(_passthrough, name="classify"))])
    worker = StageWorker(pipeline, "classify", KafkaSettings(bootstrap="127.0.0.1:1"))
    report = RunReport("wedge", 64)
    report.outcomes.update({"ok": 1227, "dead_lettered": 3})
    worker.sink.acknowledged.update({"ok": 465, "dead_lettered": 3})
    worker.sink._broken = "MessageSizeTooLargeError on wedge.out"

    worker.settle_report(report)

    assert report.outcomes["ok"] == 465
    assert report.outcomes["unwritten"] == 762
    assert report.error is not None
    assert "could not write 762" in str(report.error)
    assert "MessageSizeTooLarge" in str(report.error)


def test_a_worker_with_events_inside_and_no_progress_says_so() -> None:
    from aiokafka import TopicPartition

    from streamflow.runtime._worker import StageWorker
    from streamflow.transports._offsets import PartitionOffsets
    from streamflow.transports.kafka import KafkaSettings

    pipeline = Pipeline("stall", [Stage("classify", map_async(_passthrough, name="classify"))])
    worker = StageWorker(pipeline, "classify", KafkaSettings(bootstrap="127.0.0.1:1"))
    worker.stall_seconds = 0.0
    tracker = PartitionOffsets(0)
    tracker.add(0)
    worker.source._trackers[TopicPartition("stall.in", 0)] = tracker

    assert worker._stalled() is None  # first look: progress is measured from now
    reason = worker._stalled()
    assert reason is not None and "no progress" in reason and "1 event(s) inside" in reason
    worker.sink.acknowledged["ok"] += 1
    assert worker._stalled() is None


async def test_review_decisions_apply_only_to_events_a_stage_parked(tmp_path: Path) -> None:
    from streamflow.events import StepRecord
    from streamflow.runtime.review import FileReviewQueue

    pipeline = Pipeline(
        "parked",
        [
            Stage("classify", map_async(_passthrough, name="classify")),
            Stage("check", map_async(_passthrough, name="check")),
        ],
    )
    record = StepRecord(step="check", started_at=1.0, duration_s=0.1)
    real = Event(id="R1", payload={"q": "x"}, trace=[record], outcome="review", reason="look")
    untraced = Event(id="F1", payload={"q": "x"}, outcome="review", reason="forged")
    not_review = Event(id="F2", payload={"q": "x"}, trace=[record], outcome="ok")
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"")
    (tmp_path / "out.review.jsonl").write_bytes(
        b"\n".join(encode_event(e) for e in (real, untraced, not_review)) + b"\n"
    )
    queue = FileReviewQueue(pipeline, out)

    assert [e.id for e in queue.pending()] == ["R1"]
    for forged in ("F1", "F2"):
        with pytest.raises(ConfigError, match="waiting for review"):
            await queue.approve(forged)
    assert (await queue.approve("R1")).event.id == "R1"


def test_offset_reset_defaults_to_fail_and_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamflow.cli._kafka import settings_for

    assert settings_for("127.0.0.1:9").offset_reset == "fail"
    assert settings_for("127.0.0.1:9", offset_reset="earliest").offset_reset == "earliest"
    monkeypatch.setenv("STREAMFLOW_KAFKA_OFFSET_RESET", "latest")
    assert settings_for("127.0.0.1:9").offset_reset == "latest"
    monkeypatch.setenv("STREAMFLOW_KAFKA_OFFSET_RESET", "sometimes")
    with pytest.raises(ConfigError, match="offset_reset"):
        settings_for("127.0.0.1:9")


def test_a_decode_dead_letter_keeps_the_id_of_its_json() -> None:
    with pytest.raises(DecodeError) as bad_utf8:
        decode_input(b'{"id": "T9", "text": "caf\xe9"}', None, origin="f:1")
    assert bad_utf8.value.event_id == "T9"
    limits = RecordLimits(max_record_bytes=8192)
    with pytest.raises(DecodeError) as too_big:
        decode_input(
            b'{"id": 42, "text": "' + b"x" * 9000 + b'"}', None, origin="f:2", limits=limits
        )
    assert too_big.value.event_id == "42"
    with pytest.raises(DecodeError) as not_first:
        decode_input(
            b'{"text": "' + b"x" * 9000 + b'", "id": "T1"}', None, origin="f:3", limits=limits
        )
    assert not_first.value.event_id is None
    with pytest.raises(DecodeError) as wrong_type:
        decode_input(
            b'{"id": "T5", "text": 1, "extra": ' + b"[" * 150 + b"]" * 150 + b"}",
            None,
            origin="f:4",
        )
    assert wrong_type.value.event_id == "T5"
