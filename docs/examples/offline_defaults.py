"""classify -> retrieve -> generate -> check with the offline defaults: no network, no account."""

from __future__ import annotations

import asyncio

from operators import BM25Index, check, classify, generate, retrieve
from operators.models import Article
from streamflow import Event, Pipeline, Stage, run_flow
from streamflow.transports import CollectingSink, IterableSource

ARTICLES = [
    Article(
        id="kb-refund",
        title="Refunds for double charges",
        body="If your card was charged twice, the second charge is refunded within five days. "
        "You do not need to do anything.",
        categories=("billing",),
    ),
    Article(
        id="kb-password",
        title="Resetting your password",
        body="Use the reset link on the sign in page; the link is valid for one hour.",
        categories=("account_access",),
    ),
]

# (text, label) pairs the classifier trains on when its stage starts.
EXAMPLES = [
    ("charged twice", "billing"),
    ("refund my order", "billing"),
    ("cannot sign in", "account_access"),
    ("password reset", "account_access"),
]

pipeline = Pipeline(
    "offline",
    [
        # Keyword rules decide first; the linear classifier labels the rest.
        Stage(
            "classify",
            classify(
                examples=EXAMPLES,
                rules={"billing": ["charged twice"], "account_access": ["password"]},
            ),
        ),
        Stage("retrieve", retrieve(BM25Index(ARTICLES), k=1)),  # BM25 over the articles
        Stage("generate", generate()),  # an extractive composer that quotes and cites
        Stage("check", check()),  # rules and a grounding check; a failed answer goes to review
    ],
)


async def main() -> list[Event]:
    """Answer two tickets offline; return the finished events."""
    lines = [
        b'{"id": "T1", "text": "I was charged twice for my order, please help"}',
        b'{"id": "T2", "text": "The password reset link does not work"}',
    ]
    sink = CollectingSink()
    report = await run_flow(pipeline, IterableSource(lines), sink)
    assert report.error is None
    return sink.events


if __name__ == "__main__":
    for event in asyncio.run(main()):
        payload = event.payload
        print(event.id, event.outcome, payload["classification"]["label"])
        print("  ", payload["passages"][0]["id"], payload["answer"]["text"].replace("\n", " "))
        print("  ", [(record.step, record.model) for record in event.trace])
