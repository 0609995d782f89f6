"""The wire format: encode/decode round trips, wrapping plain input, clear decode errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, PrivateAttr, ValidationError

from streamflow.errors import DecodeError, PayloadInvalid, StepFailed
from streamflow.events import (
    Event,
    StepRecord,
    decode_event,
    decode_input,
    dumps,
    encode_event,
    loads,
    stable_id,
)
from streamflow.events._model import fresh_event


class Ticket(BaseModel):
    customer: str
    text: str
    priority: int = 3


def test_event_with_a_pydantic_payload_round_trips() -> None:
    record = StepRecord(
        step="classify",
        started_at=1700000000.5,
        duration_s=0.25,
        attempt=2,
        model="linear",
        tokens_in=40,
        tokens_out=2,
        cost_usd=0.0001,
    )
    event = Event(
        id="t-1", key="c42", payload=Ticket(customer="c42", text="refund please"), attempts=2
    ).traced(record)

    decoded = decode_event(encode_event(event), Ticket)

    assert decoded == event
    assert isinstance(decoded.payload, Ticket)
    assert decoded.payload.text == "refund please"
    assert decoded.trace[0].tokens_in == 40


def test_failed_event_keeps_its_error_across_the_wire() -> None:
    event = Event(id="t-2", payload={"text": "x"}).failed(
        StepFailed("no answer found"), step="generate"
    )

    decoded = decode_event(encode_event(event))

    assert decoded.outcome == "failed"
    assert decoded.error is not None
    assert (decoded.error.type, decoded.error.message, decoded.error.step) == (
        "StepFailed",
        "no answer found",
        "generate",
    )
    assert decoded.reason == "no answer found"


def test_runtime_bookkeeping_never_goes_on_the_wire() -> None:
    event = Event(id="t-3", payload={})
    event._ticket = object()

    assert b"ticket" not in encode_event(event)
    assert decode_event(encode_event(event))._ticket is None


def test_decode_input_wraps_plain_json_with_an_id_stable_per_origin() -> None:
    line = b'{"customer": "c7", "text": "my order is late"}'

    first = decode_input(line, Ticket, origin="tickets.jsonl:12", key_field="customer")
    again = decode_input(line, Ticket, origin="tickets.jsonl:12", key_field="customer")
    other = decode_input(line, Ticket, origin="tickets.jsonl:13", key_field="customer")

    assert first.id == again.id == stable_id("tickets.jsonl:12")
    assert other.id != first.id
    assert first.key == "c7"
    assert first.payload == Ticket(customer="c7", text="my order is late")
    assert first.trace == [] and first.outcome == "ok"


def test_decode_input_prefers_the_records_own_id_and_an_explicit_key() -> None:
    line = b'{"id": 981, "customer": "c7", "text": "hi"}'

    event = decode_input(line, None, origin="in:0:5", key_field="customer", key="kafka-key")

    assert event.id == "981"
    assert event.key == "kafka-key"
    assert event.payload == {"id": 981, "customer": "c7", "text": "hi"}


@pytest.mark.parametrize("data", [b"{not json", b"", b'{"text": "cut off'])
def test_invalid_json_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_input(data, Ticket, origin="f:1")
    with pytest.raises(DecodeError):
        loads(data)


def test_json_that_is_not_an_object_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected a JSON object, got array"):
        decode_input(b"[1, 2]", None, origin="f:1")


def test_bytes_without_an_envelope_are_not_an_event() -> None:
    with pytest.raises(DecodeError, match="'id' and 'payload'"):
        decode_event(b'{"text": "hi"}')


def test_payload_that_does_not_fit_the_model_names_the_field() -> None:
    with pytest.raises(PayloadInvalid) as caught:
        decode_input(b'{"customer": "c1", "priority": "high"}', Ticket, origin="f:9")

    message = str(caught.value)
    assert "Ticket" in message
    assert "text" in message
    assert "priority" in message
    assert caught.value.event_id == stable_id("f:9")


def test_envelope_payload_is_validated_against_the_model() -> None:
    data = encode_event(Event(id="e1", payload={"customer": "c1"}))

    with pytest.raises(PayloadInvalid, match="text"):
        decode_event(data, Ticket)


def test_input_shaped_like_an_event_is_wrapped_as_a_new_event() -> None:
    upstream = Event(id="e-77", key="c9", payload={"customer": "c9"}, outcome="review").traced(
        StepRecord(step="classify", started_at=1.0, duration_s=0.5)
    )

    event = decode_input(encode_event(upstream), None, origin="support.in:0:3")

    assert event.id == "e-77"
    assert event.trace == []
    assert event.outcome == "ok"
    assert event.payload["outcome"] == "review"
    assert event.payload["payload"] == {"customer": "c9"}
    with pytest.raises(PayloadInvalid, match="text"):
        decode_input(encode_event(upstream), Ticket, origin="support.in:0:3")


def test_dumps_serialises_models_and_sets() -> None:
    value = {"ticket": Ticket(customer="c", text="t"), "labels": {"b", "a"}}

    assert loads(dumps(value)) == {
        "ticket": {"customer": "c", "text": "t", "priority": 3},
        "labels": ["a", "b"],
    }


class Nested(BaseModel):
    when: datetime
    tags: set[str]


def test_fast_encoding_gives_the_bytes_model_dump_gives() -> None:
    payload = Nested(when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), tags={"b", "a"})
    event = (
        Event(id="t-9", key="k", payload={"ticket": payload, "n": [1, 2.5, None]})
        .traced(StepRecord.timed("classify", 1.5, 0.25, attempt=2))
        .failed(StepFailed("boom"), step="check")
    )

    assert encode_event(event) == dumps(event.model_dump())
    assert decode_event(encode_event(event)).trace == event.trace


def test_a_timed_record_equals_a_validated_one() -> None:
    timed = StepRecord.timed("retrieve", 10.0, 0.5, attempt=3, outcome="review", model="m")
    validated = StepRecord(
        step="retrieve", started_at=10.0, duration_s=0.5, attempt=3, outcome="review", model="m"
    )

    assert timed == validated
    assert vars(timed) == vars(validated)
    assert dumps(timed) == dumps(validated)


def test_a_record_validates_what_it_is_given() -> None:
    assert StepRecord(step="s", started_at="1.5", duration_s=0).started_at == 1.5  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        StepRecord(step="s", started_at="soon", duration_s=0)  # type: ignore[arg-type]


def test_records_from_the_wire_ignore_fields_they_do_not_know() -> None:
    wire = {
        "id": "e",
        "payload": 1,
        "trace": [{"step": "s", "started_at": 1, "duration_s": 0, "new": 1}],
    }

    assert decode_event(dumps(wire)).trace == [StepRecord(step="s", started_at=1, duration_s=0)]


@pytest.mark.parametrize("key", [None, "c-1"])
def test_an_input_event_equals_a_validated_one(key: str | None) -> None:
    fresh = fresh_event("t-1", key, {"body": "hi"})
    validated = Event(id="t-1", key=key, payload={"body": "hi"}, created_at=fresh.created_at)

    assert fresh == validated
    assert vars(fresh) == vars(validated)
    assert fresh.model_fields_set == {"id", "key", "payload"}
    assert fresh.__pydantic_private__ == validated.__pydantic_private__
    assert fresh.__pydantic_extra__ == validated.__pydantic_extra__
    assert encode_event(fresh) == encode_event(validated)
    fresh.trace.append(StepRecord.timed("s", 1.0, 0.0))
    assert fresh_event("t-2", key, None).trace == []  # no shared defaults


def test_runtime_state_starts_from_the_declared_defaults() -> None:
    declared = {name: attr.default for name, attr in Event.__private_attributes__.items()}

    assert Event(id="x").__pydantic_private__ == declared
    assert Event.model_validate({"id": "y", "payload": 1}).__pydantic_private__ == declared


def test_a_subclass_keeps_its_own_runtime_state() -> None:
    class Tagged(Event):
        _tag: str = PrivateAttr(default="new")

    tagged = Tagged(id="z")

    assert tagged._tag == "new"
    assert tagged._failed_in is None
