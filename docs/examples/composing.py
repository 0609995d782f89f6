"""Operators compose: fan out with parallel, route by a label, bound a stage's concurrency."""

from __future__ import annotations

import asyncio

from streamflow import Event, Pipeline, Stage, map_async, parallel, route, run_flow
from streamflow.transports import CollectingSink, IterableSource


async def count_words(event: Event) -> Event:
    return event.with_payload(len(event.payload["text"].split()))


async def find_invoice(event: Event) -> Event:
    words = event.payload["text"].split()
    return event.with_payload(next((w for w in words if w.isdigit()), None))


def topic_of(event: Event) -> str:
    # The payload is what parallel merged: {"words": ..., "invoice": ...}.
    return "billing" if event.payload["invoice"] else "general"


async def billing_reply(event: Event) -> Event:
    reply = f"invoice {event.payload['invoice']} goes to the billing team"
    return event.with_payload({**event.payload, "reply": reply})


async def general_reply(event: Event) -> Event:
    return event.with_payload({**event.payload, "reply": "thanks, we are on it"})


pipeline = Pipeline(
    "compose",
    [
        # parallel: every branch gets the same event; their payloads merge into one dict.
        Stage(
            "measure",
            parallel({"words": map_async(count_words), "invoice": map_async(find_invoice)}),
        ),
        # route: one branch per label the selector returns.
        Stage(
            "reply",
            route(
                topic_of, {"billing": map_async(billing_reply), "general": map_async(general_reply)}
            ),
            concurrency=4,  # at most four events inside this stage at once
        ),
    ],
)


async def main() -> CollectingSink:
    """Run two JSON lines, as a file would hold them, and return the finished events."""
    lines = [b'{"id": "a", "text": "invoice 42 is wrong"}', b'{"id": "b", "text": "hello there"}']
    sink = CollectingSink()
    report = await run_flow(pipeline, IterableSource(lines), sink)
    assert report.error is None
    return sink


if __name__ == "__main__":
    for event in asyncio.run(main()).events:
        print(event.id, event.payload, [record.step for record in event.trace])
