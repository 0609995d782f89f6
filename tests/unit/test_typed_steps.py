"""Typed steps: plain functions of the payload, checked when the pipeline is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from streamflow import Event, Pipeline, Stage, TopologyError, batch_async, map_async
from streamflow.events import encode_event, loads
from streamflow.ops import filter, rate_limit, route, tap
from streamflow.runtime import run_flow
from streamflow.transports import EVENT_HEADER, IterableSource, JsonlSink


class Ticket(BaseModel):
    id: str
    text: str


class Classified(BaseModel):
    id: str
    text: str
    label: str


class Answer(BaseModel):
    id: str
    reply: str


async def classify(t: Ticket) -> Classified:
    return Classified(id=t.id, text=t.text, label="bug" if "crash" in t.text else "other")


def answer(c: Classified) -> Answer:  # a plain def works too
    return Answer(id=c.id, reply=f"{c.label}: {c.text}")


def _tickets(n: int) -> list[bytes]:
    return [
        f'{{"id":"t{i}","text":"{"crash" if i % 2 else "hello"} {i}"}}'.encode() for i in range(n)
    ]


def _read(path: Path) -> list[dict[str, object]]:
    return [loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _pipeline() -> Pipeline:
    return Pipeline(
        "typed",
        [
            Stage("classify", [map_async(classify), filter(lambda e: True), tap(lambda e: None)]),
            Stage("answer", map_async(answer)),
        ],
        input_model=Ticket,
    )


async def test_a_plain_function_of_the_payload_is_a_step_with_its_trace_entry(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"

    report = await run_flow(_pipeline(), IterableSource(_tickets(6)), JsonlSink(out))

    assert report.done == 6
    answers = {a["id"]: a for a in _read(out)}
    assert answers["t1"]["payload"] == {"id": "t1", "reply": "bug: crash 1"}
    assert [r["step"] for r in answers["t0"]["trace"]] == ["classify", "answer"]


def test_each_stage_knows_its_input_model_from_the_step_before() -> None:
    pipeline = _pipeline()

    assert [s.payload_model for s in pipeline.stages] == [Ticket, Classified]


def test_a_step_that_does_not_take_what_the_step_before_returns_fails_the_build() -> None:
    async def reply(t: Ticket) -> Answer:
        return Answer(id=t.id, reply="")

    with pytest.raises(TopologyError, match=r"step 'reply' takes Ticket, but step 'classify'"):
        Pipeline("bad", [Stage("a", map_async(classify)), Stage("b", map_async(reply))])
    with pytest.raises(
        TopologyError, match=r"'classify' takes Ticket.*input_model hands on Answer"
    ):
        Pipeline("bad", [Stage("a", map_async(classify))], input_model=Answer)


def test_a_step_returning_a_dict_where_a_model_is_expected_fails_the_build() -> None:
    def loose(t: Ticket) -> dict[str, str]:
        return {"id": t.id}

    with pytest.raises(TopologyError, match=r"'answer' takes Classified, but step 'loose'.*dict"):
        Pipeline(
            "loose",
            [Stage("a", [map_async(loose), map_async(answer)])],
            input_model=Ticket,
        )


def test_an_event_step_annotated_to_return_no_event_fails_when_it_is_made() -> None:
    async def sloppy(event: Event) -> dict[str, str]:
        return {}

    with pytest.raises(TopologyError, match=r"'sloppy' takes an Event but .* return dict"):
        map_async(sloppy)


async def test_a_step_returning_another_type_than_its_hint_fails_that_event(
    tmp_path: Path,
) -> None:
    async def liar(t: Ticket) -> Classified:
        return {"id": t.id}  # type: ignore[return-value]

    out = tmp_path / "out.jsonl"
    sink = JsonlSink(out)
    report = await run_flow(
        Pipeline("liar", [Stage("s", map_async(liar))], input_model=Ticket),
        IterableSource(_tickets(2)),
        sink,
    )

    assert report.outcomes.get("dead_lettered") == 2
    (first, _) = _read(Path(sink.dlq_path))
    assert "returned dict, its hint says Classified" in str(first)


async def test_a_worker_after_a_hop_gives_the_step_its_model_and_dead_letters_misfits(
    tmp_path: Path,
) -> None:
    seen: list[type] = []

    def record(c: Classified) -> Answer:
        seen.append(type(c))
        return answer(c)

    pipeline = Pipeline(
        "hop",
        [Stage("classify", map_async(classify)), Stage("answer", map_async(record))],
        input_model=Ticket,
    )
    # What the classify stage wrote to its topic: events with plain JSON payloads.
    good = Event(id="a", payload={"id": "a", "text": "crash", "label": "bug"})
    misfit = Event(id="b", payload={"id": "b", "text": "crash"})
    sink = JsonlSink(tmp_path / "out.jsonl")

    report = await run_flow(
        pipeline,
        IterableSource(
            [encode_event(good), encode_event(misfit)], headers=[(EVENT_HEADER, b"classify")]
        ),
        sink,
        stages=["answer"],
    )

    assert seen == [Classified]
    assert report.outcomes["ok"] == 1 and report.outcomes["dead_lettered"] == 1
    (dead,) = _read(Path(sink.dlq_path))
    assert "label" in str(dead) and "Classified" in str(dead)


async def test_filter_and_tap_take_the_payload_when_their_hint_says_so(tmp_path: Path) -> None:
    seen: list[str] = []

    def is_bug(c: Classified) -> bool:
        return c.label == "bug"

    def note(c: Classified) -> None:
        seen.append(c.label)

    pipeline = Pipeline(
        "typed_filter",
        [Stage("classify", [map_async(classify), filter(is_bug), tap(note)])],
        input_model=Ticket,
    )
    out = tmp_path / "out.jsonl"
    report = await run_flow(pipeline, IterableSource(_tickets(6)), JsonlSink(out))

    # A predicate of the payload keeps the bugs (not a dead letter per event).
    assert report.outcomes == {"ok": 3, "filtered": 3}
    assert sorted(a["id"] for a in _read(out)) == ["t1", "t3", "t5"]
    assert sorted(seen) == ["bug", "bug", "bug", "other", "other", "other"]  # a tap sees all
    assert all(r["step"] != "tap" for a in _read(out) for r in a["trace"])


async def test_route_hands_a_typed_selector_the_payload(tmp_path: Path) -> None:
    def label(c: Classified) -> str:
        return c.label

    async def shout(c: Classified) -> Classified:
        return c.model_copy(update={"text": c.text.upper()})

    pipeline = Pipeline(
        "typed_route",
        [
            Stage("classify", map_async(classify)),
            Stage("route", route(label, {"bug": map_async(shout), "other": tap(lambda e: None)})),
        ],
        input_model=Ticket,
    )
    out = tmp_path / "out.jsonl"
    report = await run_flow(pipeline, IterableSource(_tickets(4)), JsonlSink(out))

    assert report.outcomes == {"ok": 4}
    texts = {a["id"]: a["payload"]["text"] for a in _read(out)}
    assert texts == {"t0": "hello 0", "t1": "CRASH 1", "t2": "hello 2", "t3": "CRASH 3"}


async def test_batch_async_hands_a_typed_batch_function_the_payloads(tmp_path: Path) -> None:
    async def label_all(tickets: list[Ticket]) -> list[Classified]:
        return [Classified(id=t.id, text=t.text, label="bug") for t in tickets]

    pipeline = Pipeline(
        "typed_batch",
        [Stage("label", batch_async(label_all, max_size=4, max_wait=0.01))],
        input_model=Ticket,
    )
    out = tmp_path / "out.jsonl"
    report = await run_flow(pipeline, IterableSource(_tickets(6)), JsonlSink(out))

    assert report.outcomes == {"ok": 6}
    assert {a["payload"]["label"] for a in _read(out)} == {"bug"}
    assert all(a["trace"][0]["detail"].startswith("batch of") for a in _read(out))


async def test_rate_limit_hands_a_typed_token_estimate_the_payload(tmp_path: Path) -> None:
    def tokens(t: Ticket) -> int:
        return len(t.text)

    pipeline = Pipeline(
        "typed_limit",
        [Stage("limit", rate_limit(tokens=tokens, tokens_per_min=1_000_000))],
        input_model=Ticket,
    )
    out = tmp_path / "out.jsonl"
    report = await run_flow(pipeline, IterableSource(_tickets(4)), JsonlSink(out))

    assert report.outcomes == {"ok": 4}
