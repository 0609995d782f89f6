"""A pipeline that parks drafts it is unsure of for a person, and reworks rejected ones.

    streamflow run docs/examples/review_pipeline.py -i docs/examples/review_tickets.jsonl \\
        -o out/review.jsonl --overwrite
    streamflow review list docs/examples/review_pipeline.py -o out/review.jsonl
"""

from __future__ import annotations

from typing import Any

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.runtime import ReviewPolicy


async def draft(event: Event) -> Event:
    ticket: dict[str, Any] = dict(event.payload)
    feedback = ticket.get("feedback")
    if feedback:
        # A rejected draft comes back with the reviewer's note in the feedback field.
        note = feedback["reasons"][0].removeprefix("reviewer: ")
        ticket["reply"] = f"Sorry for the trouble: {note}."
        return event.with_payload(ticket)
    if "refund" in ticket["text"]:
        # Money is at stake: a person reads the draft before it goes out.
        ticket["reply"] = "A refund is on its way."
        return event.evolve(payload=ticket, outcome="review", reason="refunds need a person")
    ticket["reply"] = "Thanks, we are on it."
    return event.with_payload(ticket)


async def sign(event: Event) -> Event:
    return event.with_payload({**event.payload, "reply": event.payload["reply"] + " -- Support"})


pipeline = Pipeline(
    "reviewed",
    [Stage("draft", map_async(draft)), Stage("sign", map_async(sign))],
    # A rejection sends the event back to draft, with the note at payload["feedback"].
    review=ReviewPolicy(rework_stage="draft", feedback_field="feedback"),
)
