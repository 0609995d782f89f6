"""Endpoint backends (classifiers, retrievers, composer, judge) and the regenerate loop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import reactivex
from reactivex import operators as rx_ops

from operators import DraftAnswer, Passage, check
from operators.generate_loop import escalate_by_category, generate_until_checked, judge_answer
from operators.models import (
    Article,
    BM25Index,
    ComposedAnswer,
    ModelClient,
    ModelEndpoint,
    ModelOutputInvalid,
    PriceTable,
)
from operators.models.llm import (
    CallPolicy,
    ChatComposer,
    EmbeddingCentroidClassifier,
    EmbeddingRetriever,
    HybridRetriever,
    LLMClassifier,
    LLMJudge,
    UnknownLabel,
    parse_citations,
)
from streamflow.events import Event
from streamflow.ops import RateLimiter, RetryPolicy
from streamflow.testing import Fault, OpenAIServer, count_tokens, open_openai_server

ARTICLES = [
    Article(id=aid, title=title, body=body, categories=(category,))
    for aid, title, body, category in [
        ("kb-1", "Refunds", "Refunds reach your card in five days.", "billing"),
        ("kb-2", "Tracking", "Track your parcel with the tracking number.", "shipping"),
        ("kb-3", "Passwords", "Reset your password from the sign-in page.", "account_access"),
    ]
]
PRICES = PriceTable({"mini": (1.0, 2.0), "big": (10.0, 20.0), "embed": (0.5, 0.0)})
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    async with open_openai_server() as running:
        yield running


@pytest.fixture
async def client(server: OpenAIServer) -> AsyncIterator[ModelClient]:
    async with ModelClient(ModelEndpoint(base_url=server.base_url), prices=PRICES) as opened:
        yield opened


def _answer(text: str) -> Callable[[dict[str, Any]], str]:
    return lambda request: text


async def test_llm_classifier_returns_the_label_with_tokens_and_cost(
    server: OpenAIServer, client: ModelClient
) -> None:
    server.reply = _answer(json.dumps({"label": "Billing ", "confidence": 0.8, "reason": "fee"}))
    classifier = LLMClassifier(client, "mini", ["billing", "shipping"])
    (label,) = await classifier.classify(["I was charged twice"])
    (request,) = server.requests
    assert (label.label, label.confidence) == ("billing", 0.8)
    assert (label.tokens_in, label.tokens_out) == (request.prompt_tokens, request.completion_tokens)
    assert label.cost_usd == pytest.approx(PRICES.cost("mini", label.tokens_in, label.tokens_out))


async def test_llm_classifier_names_an_unknown_label(
    server: OpenAIServer, client: ModelClient
) -> None:
    server.reply = _answer(json.dumps({"label": "weather", "confidence": 0.9}))
    classifier = LLMClassifier(client, "mini", ["billing", "shipping"])
    with pytest.raises(UnknownLabel, match="'weather', which is not one of billing, shipping"):
        await classifier.classify(["Will it rain?"])


async def test_llm_classifier_rejects_an_answer_that_is_not_the_json_asked_for(
    server: OpenAIServer, client: ModelClient
) -> None:
    server.reply = _answer("It is about billing, I think.")
    classifier = LLMClassifier(client, "mini", ["billing", "shipping"])
    with pytest.raises(ModelOutputInvalid, match="did not answer with a valid ClassifierAnswer"):
        await classifier.classify(["I was charged twice"])
    (request,) = server.requests
    assert request.status == 200  # the endpoint answered; the answer was unusable


async def test_a_429_is_retried_after_retry_after_and_every_attempt_waits_on_the_limiter(
    server: OpenAIServer, client: ModelClient
) -> None:
    server.reply = _answer(json.dumps({"label": "billing", "confidence": 0.7}))
    server.inject_fault(Fault(429, retry_after=0.3))
    limiter = RateLimiter(requests_per_min=100)
    policy = CallPolicy(limiter=limiter, retry=FAST_RETRY, count_tokens=count_tokens)
    classifier = LLMClassifier(client, "mini", ["billing"], policy=policy)
    (label,) = await classifier.classify(["refund please"])
    first, second = server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.started_at - first.finished_at >= 0.29
    assert limiter.statistics().requests == 2
    assert limiter.statistics().tokens == label.tokens_in + label.tokens_out


async def test_embedding_centroid_classifier_embeds_examples_once_and_charges_the_first_text(
    server: OpenAIServer, client: ModelClient
) -> None:
    examples = [
        ("refund my invoice charge", "billing"),
        ("invoice charged twice refund", "billing"),
        ("where is my parcel tracking", "shipping"),
        ("parcel delivery tracking late", "shipping"),
    ]
    classifier = EmbeddingCentroidClassifier(client, "embed", examples)
    first = await classifier.classify(["refund the invoice charge", "parcel tracking please"])
    await classifier.classify(["invoice refund"])
    assert [label.label for label in first] == ["billing", "shipping"]
    assert all(0.5 < label.confidence <= 1.0 for label in first)
    assert server.count(path="/v1/embeddings") == 3  # examples once, then one per batch
    billed = sum(r.prompt_tokens for r in server.requests[:2])
    assert sum(label.tokens_in for label in first) == billed


async def test_embedding_retriever_finds_the_article_and_hybrid_fuses_with_bm25(
    client: ModelClient,
) -> None:
    vector = EmbeddingRetriever(client, "embed", ARTICLES)
    found = await vector.retrieve("reset password sign-in", k=2)
    hybrid = HybridRetriever(BM25Index(ARTICLES), vector, alpha=0.5)
    fused = await hybrid.retrieve("tracking number for my parcel", k=2)
    assert found.passages[0].id == "kb-3"
    assert found.tokens_in > 0 and found.cost_usd > 0
    assert fused.passages[0].id == "kb-2"
    assert len(fused.passages) == 2
    assert hybrid.name == "embed"


def test_citations_are_passage_ids_and_redaction_markers_are_not() -> None:
    passages = [Passage(id="kb-1", title="t", text="x", score=1.0)]
    text = "See [KB-1] and [kb-9]; we removed [EMAIL] and [PHONE]. Again [kb-1]."
    assert parse_citations(text, passages) == ["kb-1", "kb-9"]


async def test_chat_composer_streams_cites_and_passes_feedback(
    server: OpenAIServer, client: ModelClient
) -> None:
    server.reply = _answer("Refunds reach your card in five days [kb-1].")
    pieces: list[str] = []
    composer = ChatComposer(client, "big", on_delta=pieces.append)
    passages = [Passage(id="kb-1", title="Refunds", text="Refunds take five days.", score=1.0)]
    answer = await composer.compose(
        "refund?", category="billing", passages=passages, feedback="cites nothing"
    )
    (request,) = server.requests
    prompt = composer.messages("refund?", category="billing", passages=passages, feedback="x")
    assert request.stream
    assert "".join(pieces) == answer.text
    assert answer.citations == ["kb-1"]
    assert (answer.model, answer.tokens_out) == ("big", request.completion_tokens)
    assert "[kb-1] Refunds" in prompt[1]["content"] and "failed review" in prompt[1]["content"]


async def test_an_llm_judge_fail_verdict_reports_zero_groundedness_and_its_reasons(
    server: OpenAIServer, client: ModelClient
) -> None:
    server.reply = _answer(
        json.dumps({"outcome": "fail", "reasons": ["invents a fee"], "groundedness": 0.9})
    )
    verdict = await LLMJudge(client, "mini").judge("a", [], question="q")
    assert (verdict.outcome, verdict.groundedness) == ("fail", 0.0)
    assert verdict.reasons == ["judge: invents a fee"]


class ScriptedComposer:
    """Answers from a script per call: first drafts ungrounded, later ones grounded."""

    def __init__(self, name: str, texts: list[str]) -> None:
        self.name = name
        self.texts = texts
        self.feedback: list[str | None] = []

    async def compose(
        self, question: str, *, category: str | None, passages: Any, feedback: str | None = None
    ) -> ComposedAnswer:
        self.feedback.append(feedback)
        text = self.texts[min(len(self.feedback), len(self.texts)) - 1]
        return ComposedAnswer(text=text, citations=["kb-1"], model=self.name, tokens_in=10)


GROUNDED = "Refunds reach your card in five days, as the refunds article says."
UNGROUNDED = "Our moon base ships llamas on Tuesdays for every customer who asks."


def _case(label: str) -> dict[str, Any]:
    passage = Passage(id="kb-1", title="Refunds", text=ARTICLES[0].body, score=1.0)
    return {
        "subject": "refund",
        "body": "where is my refund",
        "classification": {"label": label, "confidence": 0.9},
        "passages": [passage.model_dump()],
    }


async def _run(op: Any, payloads: list[dict[str, Any]]) -> list[Event]:
    events = [Event(id=f"e{i}", payload=p) for i, p in enumerate(payloads)]
    return list(await reactivex.from_iterable(events).pipe(op, rx_ops.to_list()))


async def test_a_failed_check_is_drafted_again_on_the_strong_model_with_the_reasons() -> None:
    cheap = ScriptedComposer("cheap", [UNGROUNDED])
    strong = ScriptedComposer("strong", [GROUNDED])
    loop = generate_until_checked(escalate=[cheap, strong], max_rounds=3)
    (event,) = await _run(loop, [_case("shipping")])
    steps = [(r.step, r.model) for r in event.trace]
    assert event.outcome == "ok"
    assert steps[:4] == [
        ("generate#1", "cheap"),
        ("check#1", "lexical-grounding"),
        ("generate#2", "strong"),
        ("check#2", "lexical-grounding"),
    ]
    assert strong.feedback[0] is not None and "not grounded" in strong.feedback[0]
    assert event.payload["answer"]["model"] == "strong"


async def test_hard_categories_start_on_the_strong_model() -> None:
    cheap, strong = ScriptedComposer("cheap", [GROUNDED]), ScriptedComposer("strong", [GROUNDED])
    loop = generate_until_checked(escalate=[cheap, strong], start=escalate_by_category({"billing"}))
    billing, shipping = await _run(loop, [_case("billing"), _case("shipping")])
    assert billing.trace[0].model == "strong" and shipping.trace[0].model == "cheap"


async def test_after_the_last_round_the_ticket_goes_to_review_with_the_reasons() -> None:
    cheap = ScriptedComposer("cheap", [UNGROUNDED])
    loop = generate_until_checked(escalate=[cheap], max_rounds=2)
    (event,) = await _run(loop, [_case("shipping")])
    assert event.outcome == "review"
    assert event.reason is not None and event.reason.startswith("check still failing after 2")
    assert [r.step for r in event.trace if r.step.startswith("generate#")] == [
        "generate#1",
        "generate#2",
    ]


class StubJudge:
    name = "stub-judge"

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome

    async def judge(self, answer: str, passages: Any, *, question: str | None = None) -> Any:
        from operators.models.llm import JudgeVerdict

        return JudgeVerdict(
            outcome=self.outcome, groundedness=0.9, reasons=["judge: hmm"], model=self.name
        )


async def test_the_judge_runs_after_the_rules_and_can_only_make_the_outcome_stricter() -> None:
    answer = DraftAnswer(text=GROUNDED, citations=["kb-1"], model="cheap")
    case = {**_case("billing"), "answer": answer.model_dump()}
    reviewed = await _run(reactivex.compose(check(), judge_answer(StubJudge("review"))), [case])
    passed = await _run(reactivex.compose(check(), judge_answer(StubJudge("pass"))), [case])
    assert reviewed[0].outcome == "review" and reviewed[0].payload["check"]["outcome"] == "review"
    assert passed[0].outcome == "ok" and passed[0].payload["check"]["judge"] == "stub-judge"
    assert [r.step for r in passed[0].trace] == ["check", "judge"]


async def test_a_judge_that_passes_never_lifts_what_an_earlier_check_doubted() -> None:
    answer = DraftAnswer(text=GROUNDED, citations=["kb-1"], model="cheap")
    doubted = {"outcome": "review", "reasons": ["a person should read this"]}
    case = {**_case("billing"), "answer": answer.model_dump(), "check": doubted}
    (event,) = await _run(judge_answer(StubJudge("pass")), [case])
    assert event.outcome == "review"
    assert event.payload["check"]["outcome"] == "review"
    assert event.payload["check"]["reasons"] == ["a person should read this"]


async def test_the_loop_timeout_cancels_the_model_call_under_way() -> None:
    import asyncio

    cancelled: list[bool] = []

    class SlowComposer(ScriptedComposer):
        async def compose(self, question: str, **kwargs: Any) -> ComposedAnswer:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return await super().compose(question, **kwargs)

    loop = generate_until_checked(escalate=[SlowComposer("slow", [GROUNDED])], timeout=0.05)
    (event,) = await _run(loop, [_case("shipping")])
    assert event.outcome == "failed" and event.error is not None
    assert event.error.type == "StepTimeout"
    assert cancelled == [True]  # the call stopped with the loop, not after it


# -- every billed attempt on the right event's trace, faults inside their event ----------


async def test_a_failed_attempt_is_its_own_trace_record_before_the_steps_record(
    server: OpenAIServer, client: ModelClient
) -> None:
    from operators import classify

    server.reply = _answer(json.dumps({"label": "billing", "confidence": 0.9}))
    server.inject_fault(Fault(429, retry_after=0.01))
    server.inject_fault(Fault(invalid_json=True))
    policy = CallPolicy(retry=FAST_RETRY)
    classifier = LLMClassifier(client, "mini", ["billing"], policy=policy)
    op = classify(classifier, review_below=0.0)
    (event,) = await _run(op, [{"subject": "refund", "body": "charged twice"}])
    assert event.outcome == "failed"  # the broken answer is not retried: it is invalid
    calls = [(r.outcome, r.detail, r.tokens_in > 0) for r in event.trace]
    assert calls[0] == ("error", "model call 1: 429 RateLimited", False)
    assert calls[1][:2] == ("error", "model call 2: 200 ModelOutputInvalid")
    assert calls[1][2]  # billed: its tokens are on the trace
    assert event.trace[-1].outcome == "failed"
    billed = sum(r.prompt_tokens + r.completion_tokens for r in server.requests)
    assert sum(r.tokens_in + r.tokens_out for r in event.trace) == billed > 0


async def test_one_ticket_whose_call_fails_dead_letters_only_itself(
    server: OpenAIServer, client: ModelClient
) -> None:
    from operators import classify

    def reply(request: dict[str, Any]) -> str:
        if "poison" in request["messages"][-1]["content"]:
            raise RuntimeError("this ticket always fails")  # the server answers 500
        return json.dumps({"label": "billing", "confidence": 0.9})

    server.reply = reply
    classifier = LLMClassifier(
        client, "mini", ["billing"], policy=CallPolicy(retry=RetryPolicy(max_attempts=1))
    )
    op = classify(classifier, review_below=0.0, max_batch=32, max_wait=0.05)
    texts = ["refund"] * 10 + ["poison pill"] + ["refund"] * 10
    events = await _run(op, [{"subject": t, "body": t} for t in texts])
    failed = [e for e in events if e.outcome == "failed"]
    assert [e.payload["subject"] for e in failed] == ["poison pill"]


async def test_a_failed_batch_is_split_so_only_the_bad_item_fails() -> None:
    from operators import classify
    from operators.models import Label

    calls: list[int] = []

    class Batched:
        name = "batched"
        labels = ("billing",)

        async def classify(self, texts: list[str]) -> list[Label]:
            calls.append(len(texts))
            if any("poison" in t for t in texts):
                raise RuntimeError("the batch call failed")
            return [Label(label="billing", confidence=0.9) for _ in texts]

    op = classify(Batched(), review_below=0.0, max_batch=8, max_wait=0.05)
    texts = ["a", "b", "poison", "c", "d", "e", "f", "g"]
    events = await _run(op, [{"subject": t} for t in texts])
    assert [e.payload["subject"] for e in events if e.outcome == "failed"] == ["poison"]
    assert calls[0] == 8 and sorted(calls[1:]) == [1] * 8  # one batch, then each alone


async def test_a_loop_timeout_keeps_the_billed_calls_of_earlier_rounds_on_the_trace(
    server: OpenAIServer, client: ModelClient
) -> None:
    ungrounded = "Our moon base ships llamas on Tuesdays for every customer who asks."
    server.reply = _answer(ungrounded)
    composer = ChatComposer(client, "mini")
    loop = generate_until_checked(escalate=[composer], max_rounds=3, timeout=3.0)

    async def hang_second_draft() -> None:
        # Round 1's draft is answered (and billed); round 2's hangs past the loop's timeout.
        await server.wait_for(lambda rows: len(rows) >= 1, timeout=10)
        server.inject_fault(Fault(hang_s=60))

    import asyncio

    waiter = asyncio.ensure_future(hang_second_draft())
    (event,) = await _run(loop, [_case("shipping")])
    await waiter
    assert event.outcome == "failed" and event.error is not None
    assert event.error.type == "StepTimeout"
    drafts = [r for r in event.trace if r.step.startswith("generate#") and r.model == "mini"]
    assert drafts and drafts[0].tokens_in > 0  # round 1's billed draft survived the timeout
    billed = sum(r.prompt_tokens + r.completion_tokens for r in server.requests)
    assert sum(r.tokens_in + r.tokens_out for r in event.trace) == billed > 0
