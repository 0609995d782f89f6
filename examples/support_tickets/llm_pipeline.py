"""Support-ticket triage on an OpenAI-compatible endpoint, routed by cost.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 streamflow run \\
        examples/support_tickets/llm_pipeline.py \\
        --input examples/support_tickets/data/tickets.jsonl --output out/answers.jsonl

The same four steps as ``pipeline.py``, with model backends:

- classify: a cheap chat model answers ``{label, confidence, reason}`` (keyword
  rules still win for privacy requests);
- retrieve: BM25 fused with embeddings of the knowledge base;
- generate: simple categories are drafted by the cheap model, hard ones by the
  strong model; a draft that fails the rule checks or the LLM judge is drafted
  again with the reasons as feedback, one model up, twice at most, and then
  goes to review with the reasons.

Every call to the endpoint waits on one shared limiter (requests and tokens
per minute) and retries 429s and 5xx as ``Retry-After`` asks. Settings come
from the environment: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``SUPPORT_CHEAP_MODEL`` (gpt-4o-mini), ``SUPPORT_STRONG_MODEL`` (gpt-4o),
``SUPPORT_EMBED_MODEL`` (text-embedding-3-small), ``SUPPORT_REQUESTS_PER_MIN``
(500) and ``SUPPORT_TOKENS_PER_MIN`` (200000).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# streamflow loads a pipeline file with its own folder on sys.path, so siblings import.
from models import SupportCase, Ticket

from operators import BM25Index, check, classify, generate, redact, retrieve
from operators.generate_loop import escalate_by_category, generate_until_checked, judge_answer
from operators.models import AnswerComposer, ModelClient, ModelEndpoint, load_articles
from operators.models.llm import (
    CallPolicy,
    ChatComposer,
    EmbeddingRetriever,
    HybridRetriever,
    LLMClassifier,
    LLMJudge,
    estimate_tokens,
    report_request,
)
from streamflow import Pipeline, Stage
from streamflow.errors import ConfigError
from streamflow.ops import Limiter, RetryPolicy, shared_limiter
from streamflow.runtime import ReviewPolicy

__all__ = ["CATEGORIES", "HARD_CATEGORIES", "SIMPLE_CATEGORIES", "build_pipeline"]

DATA = Path(__file__).resolve().parent / "data"

REWORK = ReviewPolicy(rework_stage="generate", feedback_field="check")
"""A reviewer's rejection goes back to generate, the note written as a failed check."""

SIMPLE_CATEGORIES = ("shipping", "account_access", "feature_request")
"""Drafted by the cheap model first."""

HARD_CATEGORIES = ("billing", "bug_report", "privacy", "cancellation", "technical_setup")
"""Drafted by the strong model from the start."""

CATEGORIES = SIMPLE_CATEGORIES + HARD_CATEGORIES

DESCRIPTIONS = {
    "shipping": "hardware orders, deliveries, tracking, returns of devices",
    "account_access": "signing in, passwords, two-factor codes, SSO, locked accounts",
    "feature_request": "suggestions and requests for new features",
    "billing": "invoices, charges, refunds of fees, payment methods, taxes",
    "bug_report": "something in the product is broken or behaves wrongly",
    "privacy": "personal data, GDPR or CCPA requests, data processing agreements",
    "cancellation": "ending a subscription or closing an account",
    "technical_setup": "installing, connecting and configuring devices and integrations",
}


def build_pipeline(
    client: ModelClient,
    *,
    cheap: str,
    strong: str,
    embed: str,
    judge: str | None = None,
    limiter: Limiter | None = None,
    retry: RetryPolicy | None = None,
    count_tokens: Callable[[str], int] = estimate_tokens,
    max_rounds: int = 3,
    concurrency: int = 32,
    timeout: float | None = None,
    name: str = "support_tickets",
) -> Pipeline:
    """Build the endpoint variant of the support-ticket pipeline.

    Args:
        client: the endpoint's client (give it ``on_request=report_request``).
        cheap: the chat model for classifying, simple drafts and judging.
        strong: the chat model for hard categories and second drafts.
        embed: the embedding model.
        judge: the judge's model (default: ``cheap``).
        limiter: the endpoint's shared limiter, or None for no limit.
        retry: retries per model call (default: the backends' own).
        count_tokens: the tokenizer behind the limiter's token estimates.
        max_rounds: drafts per ticket at most.
        concurrency: tickets in flight per stage.
        timeout: seconds per HTTP read.
        name: the pipeline name.

    Returns:
        The pipeline.
    """
    options: dict[str, Any] = {"limiter": limiter, "count_tokens": count_tokens}
    if retry is not None:
        options["retry"] = retry
    policy = CallPolicy(timeout=timeout, **options)
    articles = load_articles(DATA / "knowledge_base.jsonl")
    retriever = HybridRetriever(
        BM25Index(articles),
        EmbeddingRetriever(client, embed, articles, policy=policy),
        alpha=0.5,
    )
    ladder: list[AnswerComposer] = [
        ChatComposer(client, cheap, policy=policy),
        ChatComposer(client, strong, policy=policy),
    ]
    answer_judge = LLMJudge(client, judge or cheap, policy=policy)
    return Pipeline(
        name,
        input_model=Ticket,
        key_field="customer_id",
        summary_field="classification.label",
        # A rejected answer is drafted again, with the reviewer's note where generate
        # reads a failed check's reasons.
        review=REWORK,
        stages=[
            Stage(
                "classify",
                [
                    redact(fields=["subject", "body"], into=SupportCase),
                    classify(
                        LLMClassifier(
                            client, cheap, CATEGORIES, descriptions=DESCRIPTIONS, policy=policy
                        ),
                        review_below=0.45,
                        rules={"privacy": ["GDPR", "CCPA", "data processing agreement"]},
                        into=SupportCase,
                    ),
                ],
                concurrency=concurrency,
            ),
            Stage("retrieve", retrieve(retriever, k=3, into=SupportCase), concurrency=concurrency),
            Stage(
                "generate",
                generate_until_checked(
                    lambda composer, step: generate(composer, name=step, into=SupportCase),
                    lambda step: check(
                        min_groundedness=0.5,
                        banned=["guaranteed", "legal advice"],
                        on_fail="review",
                        into=SupportCase,
                        name=step,
                    ),
                    escalate=ladder,
                    start=escalate_by_category(HARD_CATEGORIES),
                    judge_step=lambda step: judge_answer(answer_judge, into=SupportCase, name=step),
                    max_rounds=max_rounds,
                    concurrency=concurrency,
                ),
                concurrency=concurrency,
            ),
        ],
    )


def build_pipeline_from_env(environ: Mapping[str, str] | None = None) -> Pipeline:
    """Build the pipeline from ``OPENAI_*`` and ``SUPPORT_*`` environment variables.

    Raises:
        ConfigError: a setting is not usable; the message names the variable.
    """
    env = os.environ if environ is None else environ
    client = ModelClient(ModelEndpoint.from_env(env), on_request=report_request)
    base = client.endpoint.base_url
    limits: dict[str, int] = {}
    for variable, limit in (
        ("SUPPORT_REQUESTS_PER_MIN", "requests_per_min"),
        ("SUPPORT_TOKENS_PER_MIN", "tokens_per_min"),
    ):
        raw = env.get(variable) or {"requests_per_min": "500", "tokens_per_min": "200000"}[limit]
        try:
            limits[limit] = int(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be a whole number, got {raw!r}") from None
    return build_pipeline(
        client,
        cheap=env.get("SUPPORT_CHEAP_MODEL") or "gpt-4o-mini",
        strong=env.get("SUPPORT_STRONG_MODEL") or "gpt-4o",
        embed=env.get("SUPPORT_EMBED_MODEL") or "text-embedding-3-small",
        limiter=shared_limiter(base, **limits),
    )


def __getattr__(attribute: str) -> Any:
    # Built on first access, so importing the module needs no endpoint settings.
    if attribute == "pipeline":
        built = build_pipeline_from_env()
        globals()["pipeline"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
