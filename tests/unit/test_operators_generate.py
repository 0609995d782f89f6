"""generate: extractive answers that cite their passages, templates, feedback, other backends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import reactivex
from pydantic import BaseModel, ConfigDict

from operators import AnswerTemplate, DraftAnswer, ExtractiveComposer, Passage, generate
from operators.models import ComposedAnswer
from streamflow.events import Event
from streamflow.ops import Operator

PASSWORD = Passage(
    id="kb-201",
    title="Resetting your password",
    text="Click Forgot password on the sign-in page. The reset link is valid for 60 minutes. "
    "If the email does not arrive, check your spam folder.",
    score=8.0,
)
TWO_FACTOR = Passage(
    id="kb-202",
    title="Two-factor codes",
    text="Two-factor codes depend on the clock of your phone. Use a backup code if you lost "
    "the phone.",
    score=3.0,
)


class Case(BaseModel):
    model_config = ConfigDict(extra="allow")

    body: str
    passages: list[Passage] = []
    answer: DraftAnswer | None = None


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


def question(body: str, *passages: Passage, label: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"body": body, "passages": [p.model_dump() for p in passages]}
    if label:
        payload["classification"] = {"label": label, "confidence": 0.9}
    return payload


async def test_answer_quotes_and_cites_the_passages() -> None:
    [event] = await run(
        generate(),
        [question("the password reset email does not arrive", PASSWORD, TWO_FACTOR)],
    )

    answer = event.payload["answer"]
    assert answer["citations"] == ["kb-201"]
    assert "If the email does not arrive, check your spam folder. [kb-201]" in answer["text"]
    assert "Forgot password" in answer["text"]
    assert answer["model"] == "extractive"
    assert event.outcome == "ok"


async def test_answer_draws_on_several_passages_when_they_overlap() -> None:
    [event] = await run(
        generate(),
        [question("reset link for password and my phone backup code", PASSWORD, TWO_FACTOR)],
    )

    assert set(event.payload["answer"]["citations"]) == {"kb-201", "kb-202"}


async def test_category_template_wraps_the_answer() -> None:
    composer = ExtractiveComposer(
        templates={
            "account_access": AnswerTemplate(
                greeting="Hi, sorry you cannot sign in.", closing="We are here to help."
            )
        }
    )

    [event] = await run(
        generate(composer), [question("password reset", PASSWORD, label="account_access")]
    )

    text = event.payload["answer"]["text"]
    assert text.startswith("Hi, sorry you cannot sign in.")
    assert text.endswith("We are here to help.")


async def test_no_passages_gives_a_fallback_without_citations() -> None:
    [event] = await run(generate(), [question("something unusual")])

    answer = event.payload["answer"]
    assert answer["citations"] == []
    assert "specialist" in answer["text"]


async def test_feedback_from_a_failed_check_narrows_the_answer() -> None:
    failed = question("reset link for password and my phone backup code", PASSWORD, TWO_FACTOR)
    failed["check"] = {"outcome": "fail", "reasons": ["answer not grounded"]}
    seen: list[str | None] = []

    class Spy(ExtractiveComposer):
        async def compose(self, question: str, **options: Any) -> ComposedAnswer:
            seen.append(options.get("feedback"))
            return await super().compose(question, **options)

    [event] = await run(generate(Spy()), [failed])

    assert seen == ["answer not grounded"]
    assert event.payload["answer"]["citations"] == ["kb-201"]
    assert event.payload["answer"]["text"].count("[kb-201]") == 1


async def test_generate_on_a_model_payload_with_passage_models() -> None:
    case = Case(body="reset my password", passages=[PASSWORD])

    [event] = await run(generate(), [case])

    assert isinstance(event.payload, Case)
    assert event.payload.answer is not None
    assert event.payload.answer.citations == ["kb-201"]
    assert case.answer is None, "the input payload must not be mutated"


async def test_llm_backend_usage_lands_in_the_trace() -> None:
    class FakeLLM:
        name = "gpt-test"

        async def compose(
            self,
            question: str,
            *,
            category: str | None,
            passages: Sequence[Passage],
            feedback: str | None = None,
        ) -> ComposedAnswer:
            return ComposedAnswer(
                text=f"About {category}: see {passages[0].title}.",
                citations=[passages[0].id],
                model="gpt-test-2025",
                tokens_in=120,
                tokens_out=30,
                cost_usd=0.0004,
            )

    [event] = await run(generate(FakeLLM()), [question("x", PASSWORD, label="account_access")])

    [record] = event.trace
    assert (record.step, record.model) == ("generate", "gpt-test-2025")
    assert (record.tokens_in, record.tokens_out, record.cost_usd) == (120, 30, 0.0004)
    assert event.payload["answer"]["text"] == "About account_access: see Resetting your password."
