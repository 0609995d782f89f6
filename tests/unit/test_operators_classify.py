"""classify: labels and confidence, review below the threshold, keyword rules, batching."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import reactivex
from pydantic import BaseModel, ConfigDict

from operators import Classification, LinearTextClassifier, classify
from operators.models import Label
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator

EXAMPLES = [
    *[
        (text, "billing")
        for text in (
            "I was charged twice for my invoice",
            "refund the duplicate payment on my card",
            "why is my invoice amount higher this month",
            "payment failed, please retry my credit card",
            "the bill shows a charge I do not recognise",
            "need a copy of last month's invoice for accounting",
        )
    ],
    *[
        (text, "account_access")
        for text in (
            "I cannot log in, my password is rejected",
            "password reset email never arrives",
            "locked out of my account after too many attempts",
            "two-factor code is not accepted at sign in",
            "forgot my password and the reset link expired",
            "can't sign in on the new tablet",
        )
    ],
    *[
        (text, "shipping")
        for text in (
            "where is my order, the parcel has not arrived",
            "tracking number for my hardware delivery",
            "the courier lost my package",
            "card reader delivery is late",
            "change the delivery address of my order",
            "the box arrived damaged in shipping",
        )
    ],
]


class Ticket(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    subject: str
    body: str


class ClassifiedTicket(Ticket):
    classification: Classification | None = None


async def run(op: Operator, payloads: Sequence[Any]) -> list[Event]:
    """Push payloads through ``op`` inside the running loop; return its events in input order."""
    events = [Event(id=f"e{i}", key=f"k{i}", payload=p) for i, p in enumerate(payloads)]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    out: list[Event] = []
    op(reactivex.from_iterable(events)).subscribe(
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    await done
    return sorted(out, key=lambda e: int(e.id[1:]))


@pytest.fixture(scope="module")
def model() -> LinearTextClassifier:
    return LinearTextClassifier.from_examples(EXAMPLES)


class RecordingClassifier:
    """A classifier that labels everything 'billing' with a fixed confidence and logs batches."""

    def __init__(self, confidence: float = 0.9, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.confidence = confidence
        self.fail = fail

    @property
    def name(self) -> str:
        return "recording"

    @property
    def labels(self) -> Sequence[str]:
        return ("billing",)

    async def classify(self, texts: list[str]) -> list[Label]:
        self.batches.append(texts)
        if self.fail:
            raise RuntimeError("model crashed")
        return [Label(label="billing", confidence=self.confidence, tokens_in=len(t)) for t in texts]


async def test_classify_writes_label_and_confidence_into_dict_payload(
    model: LinearTextClassifier,
) -> None:
    [event] = await run(
        classify(model, review_below=0.2),
        [{"subject": "Refund please", "body": "You charged my card twice for the invoice"}],
    )

    found = event.payload["classification"]
    assert event.outcome == "ok"
    assert found["label"] == "billing"
    assert 0.2 <= found["confidence"] <= 1.0
    assert found["method"] == "model"
    assert found["model"] == "tfidf-sgd"
    assert event.payload["subject"] == "Refund please"


async def test_classify_labels_each_event_on_its_own_text(model: LinearTextClassifier) -> None:
    events = await run(
        classify(model, review_below=0.0),
        [
            {"body": "my password reset link does not work and I am locked out"},
            {"body": "the parcel with my card reader has not arrived, tracking shows nothing"},
            {"body": "there is a duplicate charge on my invoice"},
        ],
    )

    labels = [e.payload["classification"]["label"] for e in events]
    assert labels == ["account_access", "shipping", "billing"]


async def test_classify_on_pydantic_payload_keeps_its_model_type(
    model: LinearTextClassifier,
) -> None:
    ticket = Ticket(id="t1", subject="Locked out", body="password rejected, cannot log in")

    [kept] = await run(classify(model, review_below=0.0), [ticket])
    [turned] = await run(classify(model, review_below=0.0, into=ClassifiedTicket), [ticket])

    assert isinstance(kept.payload, Ticket)
    assert kept.payload.classification.label == "account_access"  # type: ignore[attr-defined]
    assert isinstance(turned.payload, ClassifiedTicket)
    assert turned.payload.classification is not None
    assert turned.payload.classification.label == "account_access"
    assert ticket.model_extra == {}, "the input payload must not be mutated"


async def test_low_confidence_event_goes_to_review_with_reason() -> None:
    backend = RecordingClassifier(confidence=0.3)

    [event] = await run(classify(backend, review_below=0.45), [{"body": "hmm"}])

    assert event.outcome == "review"
    assert event.reason is not None
    assert event.reason.startswith("low confidence 0.300 < 0.45")
    assert event.payload["classification"]["label"] == "billing"
    assert event.trace[-1].outcome == "review"


async def test_keyword_rule_overrides_the_model_with_full_confidence() -> None:
    backend = RecordingClassifier(confidence=0.99)
    op = classify(backend, rules={"privacy": ["GDPR", "data processing agreement"]})

    events = await run(
        op,
        [
            {"body": "Under gdpr I want a copy of my data"},
            {"body": "please sign our Data  Processing Agreement"},
            {"body": "nothing special, a refund"},
        ],
    )

    first, second, third = (e.payload["classification"] for e in events)
    assert first == {"label": "privacy", "confidence": 1.0, "method": "rule", "model": None}
    assert second["label"] == "privacy"
    assert third["method"] == "model"
    assert backend.batches == [["nothing special, a refund"]], "rules skip the model"


async def test_rules_match_whole_words_only() -> None:
    op = classify(RecordingClassifier(), rules={"privacy": ["gdpr"]})

    [event] = await run(op, [{"body": "my gdprx account"}])

    assert event.payload["classification"]["method"] == "model"


async def test_model_sees_micro_batches_not_single_texts() -> None:
    backend = RecordingClassifier()

    events = await run(classify(backend, max_batch=4), [{"body": f"text {i}"} for i in range(10)])

    assert sorted(len(b) for b in backend.batches) == [2, 4, 4]
    assert all(e.payload["classification"]["label"] == "billing" for e in events)


async def test_trace_record_names_step_model_and_tokens() -> None:
    [event] = await run(classify(RecordingClassifier(), name="triage"), [{"body": "12345"}])

    [record] = event.trace
    assert record.step == "triage"
    assert record.model == "recording"
    assert record.outcome == "ok"
    assert record.tokens_in == 5
    assert record.duration_s >= 0.0
    assert event.attempts == 1


async def test_failing_model_sends_the_event_to_the_dead_letters() -> None:
    [event] = await run(classify(RecordingClassifier(fail=True)), [{"body": "x"}])

    assert event.outcome == "failed"
    assert event.error is not None
    assert event.error.step == "classify"
    assert "model crashed" in event.error.message


async def test_inactive_events_pass_without_a_model_call() -> None:
    backend = RecordingClassifier()
    parked = Event(id="e0", payload={"body": "x"}, outcome="review", reason="earlier")
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    out: list[Event] = []
    classify(backend)(reactivex.of(parked)).subscribe(
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    await done

    assert out == [parked]
    assert backend.batches == []


def test_classify_needs_a_model_or_examples() -> None:
    with pytest.raises(ConfigError, match="examples"):
        classify()


def test_classifier_needs_two_labels() -> None:
    with pytest.raises(ConfigError, match="two labels"):
        LinearTextClassifier.from_examples([("a", "x"), ("b", "x")])


def test_classifier_trains_from_a_jsonl_file(tmp_path: Any) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join(
            f'{{"subject": "s", "body": "{text}", "label": "{label}"}}' for text, label in EXAMPLES
        )
    )

    model = LinearTextClassifier.from_examples(path)

    assert list(model.labels) == ["account_access", "billing", "shipping"]
    assert model.predict(["my order has not arrived"])[0].label == "shipping"
