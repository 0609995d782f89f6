"""retrieve: BM25 top-k passages for the question, category preference, dict and model payloads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import reactivex
from pydantic import BaseModel, ConfigDict

from operators import BM25Index, Passage, retrieve
from operators.models import Article, load_articles
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator

ARTICLES = [
    Article(
        id="kb-password",
        title="Resetting your password",
        body="Click Forgot password on the sign-in page. The reset link is valid for 60 minutes. "
        "Check your spam folder if the email does not arrive.",
        categories=("account_access",),
    ),
    Article(
        id="kb-refund",
        title="Requesting a refund",
        body="Refunds for duplicate charges go back to the original card within 10 days. "
        "Send us the invoice number.",
        categories=("billing",),
    ),
    Article(
        id="kb-tracking",
        title="Tracking your hardware order",
        body="Orders ship within two days and you get a tracking link by email. "
        "Delivery takes 3 to 5 business days.",
        categories=("shipping",),
    ),
    Article(
        id="kb-return",
        title="Returning hardware for a refund",
        body="Unused hardware can be returned within 30 days for a full refund of the order.",
        categories=("shipping", "billing"),
    ),
]


class Question(BaseModel):
    model_config = ConfigDict(extra="allow")

    subject: str
    body: str


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
def index() -> BM25Index:
    return BM25Index(ARTICLES)


async def test_top_passage_answers_the_question(index: BM25Index) -> None:
    events = await run(
        retrieve(index, k=2),
        [
            {"subject": "Forgot my password", "body": "the reset email never arrived"},
            {"subject": "Where is my order?", "body": "no tracking link yet for the delivery"},
        ],
    )

    first, second = (e.payload["passages"] for e in events)
    assert first[0]["id"] == "kb-password"
    assert second[0]["id"] == "kb-tracking"
    assert len(first) <= 2
    assert first[0]["score"] > 0
    assert first[0]["title"] == "Resetting your password"


async def test_passages_come_best_first_and_at_most_k(index: BM25Index) -> None:
    [event] = await run(retrieve(index, k=3), [{"body": "refund for the hardware order I return"}])

    scores = [p["score"] for p in event.payload["passages"]]
    assert 1 <= len(scores) <= 3
    assert scores == sorted(scores, reverse=True)


async def test_classified_category_boosts_its_articles() -> None:
    question = {
        "body": "refund for my order",
        "classification": {"label": "billing", "confidence": 0.9},
    }
    plain = BM25Index(ARTICLES)
    filtered = BM25Index(ARTICLES, category_mode="filter")

    [unfiltered] = await run(retrieve(plain, k=4, category_field=None), [question])
    [only_billing] = await run(retrieve(filtered, k=4), [question])

    ids = {p["id"] for p in only_billing.payload["passages"]}
    assert ids <= {"kb-refund", "kb-return"}
    assert "kb-tracking" in {p["id"] for p in unfiltered.payload["passages"]}


async def test_boost_moves_the_category_up(index: BM25Index) -> None:
    passages = index.search("refund order", k=4)
    boosted = BM25Index(ARTICLES, category_boost=5.0).search(
        "refund order", k=4, category="shipping"
    )

    assert passages[0].id != "kb-tracking"
    assert boosted[0].id in {"kb-tracking", "kb-return"}
    assert all(b.categories for b in boosted)


async def test_retrieve_on_a_model_payload(index: BM25Index) -> None:
    question = Question(subject="password", body="locked out, reset link expired")

    [event] = await run(retrieve(index), [question])

    assert isinstance(event.payload, Question)
    passages = event.payload.passages  # type: ignore[attr-defined]
    assert isinstance(passages[0], Passage)
    assert passages[0].id == "kb-password"


async def test_unrelated_question_gets_no_passages(index: BM25Index) -> None:
    [event] = await run(retrieve(index), [{"body": "zebra quantum banana"}])

    assert event.outcome == "ok"
    assert event.payload["passages"] == []
    assert event.trace[-1].detail == "no passages"


async def test_trace_names_the_retriever_and_the_passages(index: BM25Index) -> None:
    [event] = await run(retrieve(index, k=1, name="find_articles"), [{"body": "tracking link"}])

    [record] = event.trace
    assert (record.step, record.model, record.detail) == ("find_articles", "bm25", "kb-tracking")


async def test_retrieve_builds_its_index_from_a_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    path.write_text(
        '{"id": "a1", "title": "Pairing a card reader", "body": "Hold the power button.", '
        '"category": "technical_setup"}\n'
        '{"id": "a2", "title": "Invoices", "body": "Download invoices as PDF."}\n'
    )

    [event] = await run(retrieve(articles=path), [{"body": "how do I pair the reader"}])

    assert [p["id"] for p in event.payload["passages"]] == ["a1"]
    assert load_articles(path)[0].categories == ("technical_setup",)


def test_index_rejects_duplicate_ids_and_empty_knowledge_base() -> None:
    with pytest.raises(ConfigError, match="unique"):
        BM25Index([ARTICLES[0], ARTICLES[0]])
    with pytest.raises(ConfigError, match="empty"):
        BM25Index([])
    with pytest.raises(ConfigError, match="articles"):
        retrieve()
