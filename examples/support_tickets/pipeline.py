"""Support-ticket triage: classify each ticket, find help articles, draft a reply, check it.

    python examples/support_tickets/generate_tickets.py --count 2500 --seed 7
    streamflow run examples/support_tickets/pipeline.py \\
        --input examples/support_tickets/data/tickets.jsonl --output out/answers.jsonl

Everything runs offline: a linear classifier trained on ``data/training.jsonl``
(train it once with ``streamflow train examples/support_tickets/pipeline.py
--stage classify``, which writes ``data/classifier.model``; without that file
the classify stage trains when it starts),
BM25 over ``data/knowledge_base.jsonl``, an extractive reply composer, and
rule and grounding checks. Swap any step's backend for an OpenAI-compatible
model without touching the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

# streamflow loads a pipeline file with its own folder on sys.path, so siblings import.
from models import SupportCase, Ticket

from operators import (
    AnswerTemplate,
    ExtractiveComposer,
    check,
    classify,
    generate,
    redact,
    retrieve,
)
from streamflow import Pipeline, Stage
from streamflow.runtime import ReviewPolicy

__all__ = ["REPLY_TEMPLATES", "pipeline"]

DATA = Path(__file__).resolve().parent / "data"
# Written by `streamflow train ... --stage classify` from the examples (JSONL of
# subject/body or text, and label); both can be pointed elsewhere.
CLASSIFIER_MODEL = Path(os.environ.get("SUPPORT_CLASSIFIER_MODEL", DATA / "classifier.model"))
TRAINING = Path(os.environ.get("SUPPORT_TRAINING_EXAMPLES", DATA / "training.jsonl"))

REWORK = ReviewPolicy(rework_stage="generate", feedback_field="check")
"""A reviewer's rejection goes back to generate, the note written as a failed check."""

REPLY_TEMPLATES = {
    "billing": AnswerTemplate(
        greeting="Hi, thanks for contacting us about your billing.",
        lead="Here is what our billing guide says:",
        closing="If the charge still looks wrong, reply with the invoice number and we will "
        "sort it out.",
    ),
    "account_access": AnswerTemplate(
        greeting="Hi, sorry you are having trouble signing in.",
        lead="These steps usually get you back in:",
        closing="If you are still locked out, reply here and we will verify your identity "
        "and help.",
    ),
    "bug_report": AnswerTemplate(
        greeting="Hi, thanks for reporting this problem.",
        lead="While we look into it, this should help:",
        closing="If it keeps happening, reply with the time it happened and your device model.",
    ),
    "shipping": AnswerTemplate(
        greeting="Hi, thanks for getting in touch about your hardware order.",
        lead="Here is how deliveries and returns work:",
        closing="Reply with your order number if you need us to chase the carrier.",
    ),
    "feature_request": AnswerTemplate(
        greeting="Hi, thanks for the suggestion.",
        closing="We pass every request on to our product team.",
    ),
    "cancellation": AnswerTemplate(
        greeting="Hi, we are sorry to see you go.",
        lead="Here is how cancelling works:",
        closing="If there is anything we can do to keep you, just reply to this message.",
    ),
    "technical_setup": AnswerTemplate(
        greeting="Hi, happy to help you get set up.",
        lead="Follow these steps:",
        closing="If anything does not connect, reply with a screenshot and we will walk you "
        "through it.",
    ),
    "privacy": AnswerTemplate(
        greeting="Hi, thanks for your privacy question.",
        closing="Our privacy team reads every request and replies within 30 days.",
    ),
}


def offline_pipeline() -> Pipeline:
    """The four steps on their offline defaults: nothing leaves this machine."""
    return Pipeline(
        "support_tickets",
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
                    # Redact first, so neither the review queue nor a model sees personal data.
                    redact(fields=["subject", "body"], into=SupportCase),
                    classify(
                        model=CLASSIFIER_MODEL,
                        examples=TRAINING,
                        review_below=0.45,
                        rules={"privacy": ["GDPR", "CCPA", "data processing agreement"]},
                    ),
                ],
                concurrency=64,
            ),
            Stage(
                "retrieve", retrieve(articles=DATA / "knowledge_base.jsonl", k=3), concurrency=64
            ),
            Stage(
                "generate",
                generate(ExtractiveComposer(templates=REPLY_TEMPLATES, max_sentences=3)),
                concurrency=64,
            ),
            Stage(
                "check",
                check(
                    min_groundedness=0.5,
                    banned=["guaranteed", "legal advice"],
                    on_fail="review",
                ),
                concurrency=64,
            ),
        ],
    )


# With an OpenAI-compatible endpoint configured, the same tickets run on models:
# cheap or strong chat model by category, redrafts on a failed check, shared rate limits.
# Only the chosen pipeline is built; building it loads no model (each stage loads its own
# when it starts).
if os.environ.get("OPENAI_BASE_URL"):
    from llm_pipeline import build_pipeline_from_env

    pipeline = build_pipeline_from_env()
else:
    pipeline = offline_pipeline()
