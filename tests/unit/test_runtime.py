"""The in-process runner: every record accounted for, credit bound, drain, metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamflow import Event, Pipeline, RetriableError, RetryPolicy, Stage, map_async
from streamflow.errors import ConfigError, TopologyError
from streamflow.events import loads
from streamflow.metrics import CollectorRegistry, PipelineMetrics
from streamflow.ops import filter
from streamflow.runtime import run_flow
from streamflow.transports import IterableSource, JsonlSink


class Ticket(BaseModel):
    id: str
    customer: str
    text: str


def _lines(n: int) -> list[bytes]:
    return [f'{{"id":"t{i}","customer":"c{i % 7}","text":"hello {i}"}}'.encode() for i in range(n)]


def _read(path: Path) -> list[dict[str, object]]:
    return [loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def _answer(event: Event) -> Event:
    await asyncio.sleep(0.0005)
    return event


async def _flaky(event: Event) -> Event:
    if event.id.endswith("3"):
        raise RetriableError("model overloaded", retry_after=0.001)
    if event.id.endswith("4"):
        return event.evolve(outcome="review", reason="unsure")
    return event


def _pipeline(window: int = 32) -> Pipeline:
    return Pipeline(
        "tickets",
        [
            Stage("answer", map_async(_answer, concurrency=8), concurrency=16),
            Stage(
                "check",
                [
                    map_async(_flaky, retry=RetryPolicy(max_attempts=2, base_delay=0.001)),
                    filter(lambda e: not e.id.endswith("5")),
                ],
            ),
        ],
        input_model=Ticket,
        key_field="customer",
        window=window,
    )


async def test_every_input_line_lands_exactly_once_in_output_review_or_dead_letters(
    tmp_path: Path,
) -> None:
    lines = [*_lines(200), b"{not json", b'{"id":"bad","text":"no customer"}', b"[1,2]"]
    out = tmp_path / "answers.jsonl"
    report = await run_flow(_pipeline(), IterableSource(lines), JsonlSink(out))

    answers = _read(out)
    reviews = _read(tmp_path / "answers.review.jsonl")
    letters = _read(tmp_path / "answers.dlq.jsonl")
    filtered = [f"t{i}" for i in range(200) if str(i).endswith("5")]
    seen = [a["id"] for a in answers] + [r["id"] for r in reviews] + [d["id"] for d in letters]
    expected = {f"t{i}" for i in range(200)} - set(filtered)
    assert sorted(i for i in seen if i in expected) == sorted(expected)
    assert len([i for i in seen if i in expected]) == len(expected)  # no duplicates
    assert report.outcomes["filtered"] == len(filtered)
    assert report.read == 203
    decode_letters = [d for d in letters if d["stage"] == "decode"]
    assert len(decode_letters) == 3
    reasons = " ".join(str(d["error"]) for d in decode_letters)
    assert (
        "not valid JSON" in reasons
        and "customer" in reasons
        and "expected a JSON object" in reasons
    )
    assert all(d["original"] for d in decode_letters)


async def test_failed_events_carry_error_attempts_and_stage(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    await run_flow(_pipeline(), IterableSource(_lines(20)), JsonlSink(out))
    letters = [d for d in _read(tmp_path / "o.dlq.jsonl") if d["stage"] != "decode"]
    assert {d["id"] for d in letters} == {"t3", "t13"}
    for letter in letters:
        assert letter["stage"] == "check"
        assert letter["error"]["type"] == "RetriableError"  # type: ignore[index]
        assert letter["event"]["trace"][-1]["attempt"] == 2  # type: ignore[index]


async def test_events_in_flight_never_exceed_the_window(tmp_path: Path) -> None:
    report = await run_flow(
        _pipeline(window=16),
        IterableSource(_lines(300)),
        JsonlSink(tmp_path / "o.jsonl"),
    )
    assert report.peak_in_flight <= 16
    assert report.peak_in_flight >= 8  # the window was actually used
    assert report.done == 300


async def test_stop_drains_in_flight_work_and_accounts_for_the_rest(tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def slow(event: Event) -> Event:
        if event.id == "t40":
            stop.set()
        if event.id == "t2":
            await asyncio.sleep(60)  # cannot finish within the drain timeout
        await asyncio.sleep(0.001)
        return event

    pipeline = Pipeline("slow", [Stage("s", map_async(slow, concurrency=4))], window=8)
    out = tmp_path / "o.jsonl"
    report = await run_flow(
        pipeline,
        IterableSource(_lines(1000)),
        JsonlSink(out),
        stop=stop,
        drain_timeout=0.5,
    )
    assert report.stopped_early
    assert report.read < 1000
    written = len(_read(out)) + len(_read(tmp_path / "o.dlq.jsonl"))
    assert written == report.read  # everything read was written or dead-lettered
    interrupted = [d for d in _read(tmp_path / "o.dlq.jsonl") if d["stage"] == "shutdown"]
    assert [d["id"] for d in interrupted] == ["t2"]


async def test_stage_metrics_count_outcomes_and_durations(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, "tickets")
    await run_flow(
        _pipeline(),
        IterableSource(_lines(50)),
        JsonlSink(tmp_path / "o.jsonl"),
        metrics=metrics,
    )

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, {"pipeline": "tickets", **labels})
        return found or 0.0

    assert value("streamflow_events_total", stage="answer", outcome="ok") == 50
    assert value("streamflow_events_total", stage="check", outcome="failed") == 5
    assert value("streamflow_events_total", stage="check", outcome="dead_lettered") == 5
    assert value("streamflow_stage_duration_seconds_count", stage="answer") == 50
    assert value("streamflow_in_flight", stage="answer") == 0


def test_pipeline_rejects_per_key_order_after_an_unordered_stage() -> None:
    with pytest.raises(TopologyError) as caught:
        Pipeline(
            "p",
            [
                Stage("first", map_async(_answer)),
                Stage("second", map_async(_answer, ordered="key")),
            ],
        )
    assert "_answer" in str(caught.value) and "ordered='key'" in str(caught.value)


def test_pipeline_rejects_a_window_larger_than_a_stage_buffer() -> None:
    with pytest.raises(TopologyError, match="lower the window"):
        Pipeline("p", [Stage("s", map_async(_answer, capacity=10))], window=100)


@pytest.mark.parametrize(
    ("name", "stages", "message"),
    [
        ("Bad Name", [Stage("s", map_async(_answer))], "not valid"),
        ("p", [], "no stages"),
        ("p", [Stage("s", map_async(_answer)), Stage("s", map_async(_answer))], "used twice"),
        ("p", [Stage("dlq", map_async(_answer))], "clashes"),
    ],
)
def test_bad_pipeline_configuration_fails_at_build_with_the_fix(
    name: str, stages: list[Stage], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Pipeline(name, stages)


def test_topic_and_group_names_follow_the_design() -> None:
    pipeline = _pipeline()
    assert pipeline.topic_into("answer") == "tickets.in"
    assert pipeline.topic_out_of("answer") == "tickets.answer"
    assert pipeline.topic_into("check") == "tickets.answer"
    assert pipeline.topic_out_of("check") == "tickets.out"
    assert pipeline.group("check") == "tickets.check"
    assert pipeline.topics() == [
        "tickets.in",
        "tickets.answer",
        "tickets.out",
        "tickets.dlq",
        "tickets.review",
    ]


async def test_results_read_back_from_topics_cost_the_stages_as_the_run_did(
    tmp_path: Path,
) -> None:
    # `run --broker` rebuilds the summary from what reaches the output topics; its
    # cost per stage must match what the stage hooks counted in one process.
    from streamflow.events import StepRecord
    from streamflow.runtime import RunReport
    from streamflow.runtime._distributed import _ResultFiles, _Results

    def priced(step: str, cost: float) -> StepRecord:
        return StepRecord(step=step, started_at=0.0, duration_s=0.0, model="m", cost_usd=cost)

    async def draft(event: Event) -> Event:
        # Rounds of its own first (their names are no stage's), then its own record.
        rounds = [priced("draft#1", 0.25), priced("draft#2", 0.5)]
        return event.evolve(trace=[*event.trace, *rounds, priced("draft", 0.125)])

    async def review(event: Event) -> Event:
        return event.traced(priced("review", 1.0))

    pipeline = Pipeline(
        "costs", [Stage("write", map_async(draft)), Stage("read", map_async(review))]
    )
    out = tmp_path / "o.jsonl"
    report = await run_flow(pipeline, IterableSource(_lines(4)), JsonlSink(out))
    assert report.stage_cost == {"write": 3.5, "read": 4.0}

    files = _ResultFiles(str(tmp_path / "again.jsonl"), None, None)
    results = _Results(pipeline, RunReport("costs", window=8), files)
    for line in out.read_bytes().splitlines():
        results.add(pipeline.output_topic, line, not_before=0.0)
    files.close()
    assert results.report.stage_cost == report.stage_cost


async def test_a_model_without_a_price_is_reported_as_unknown_cost_not_zero(
    tmp_path: Path,
) -> None:
    from streamflow.events import StepRecord as _Record

    async def priced_and_not(event: Event) -> Event:
        record = _Record.timed("answer", 0.0, 0.0, model="house-llama", tokens_in=9, cost_usd=None)
        return event.traced(record)

    pipeline = Pipeline(
        "unpriced", stages=[Stage("answer", map_async(priced_and_not, name="answer"))]
    )
    report = await run_flow(
        pipeline, IterableSource([b'{"q": 1}']), JsonlSink(tmp_path / "o.jsonl")
    )
    assert report.unpriced == {"house-llama"}
    assert report.stage_cost.get("answer", 0.0) == 0.0


async def test_an_event_interrupted_at_shutdown_keeps_the_trace_of_the_stages_it_finished(
    tmp_path: Path,
) -> None:
    from streamflow.events import StepRecord as _Record

    reached = asyncio.Event()

    async def billed(event: Event) -> Event:
        record = _Record.timed("billed", 0.0, 0.0, model="m", tokens_in=7, cost_usd=0.001)
        return event.traced(record)

    async def stuck(event: Event) -> Event:
        reached.set()
        await asyncio.Event().wait()
        return event

    pipeline = Pipeline(
        "interrupted",
        stages=[
            Stage("one", map_async(billed, name="billed")),
            Stage("two", map_async(stuck, name="stuck")),
        ],
    )
    stop = asyncio.Event()

    async def stop_when_stuck() -> None:
        await reached.wait()
        stop.set()

    stopper = asyncio.ensure_future(stop_when_stuck())
    out = tmp_path / "o.jsonl"
    report = await run_flow(
        pipeline, IterableSource([b'{"q": 1}']), JsonlSink(out), stop=stop, drain_timeout=0.1
    )
    await stopper
    assert report.outcomes["interrupted"] == 1
    (letter,) = [loads(line) for line in (tmp_path / "o.dlq.jsonl").read_bytes().splitlines()]
    trace = letter["event"]["trace"]
    assert [(r["step"], r["tokens_in"]) for r in trace] == [("billed", 7)]
