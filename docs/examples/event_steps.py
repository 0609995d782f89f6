"""Steps of the envelope, retries and outcomes, run with run_flow and a collecting sink."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

from pydantic import BaseModel

from streamflow import Event, Pipeline, RetryPolicy, Stage, filter, map_async, run_flow
from streamflow.transports import AsyncIterableSource, CollectingSink


class Ticket(BaseModel):
    id: str
    text: str


class FlakyModel:
    """Stands in for a model endpoint whose first call for each ticket fails."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def label(self, ticket: Ticket) -> str:
        self.calls[ticket.id] += 1
        if self.calls[ticket.id] == 1:
            raise RuntimeError("connection reset by peer")
        return "urgent" if "down" in ticket.text else "normal"


model = FlakyModel()


async def label_ticket(event: Event) -> Event:
    # A step of the envelope: it sees the id, key and trace, and chooses the outcome.
    ticket = event.payload_as(Ticket)
    label = await model.label(ticket)
    if "not sure" in ticket.text:
        return event.evolve(outcome="review", reason="the reviewer should read this one")
    return event.with_payload({**ticket.model_dump(), "label": label})


# RuntimeError is not retried unless named; base_delay keeps the example quick.
retry = RetryPolicy(max_attempts=3, base_delay=0.01, retry_on=(RuntimeError,))

pipeline = Pipeline(
    "triage",
    [
        Stage("screen", filter(lambda event: "spam" not in event.payload["text"])),
        Stage("label", map_async(label_ticket, retry=retry, name="label_ticket")),
    ],
)


async def tickets() -> AsyncIterator[dict[str, str]]:
    for i, text in enumerate(["the site is down", "buy spam now", "not sure what happened"]):
        yield {"id": f"t{i + 1}", "text": text}


async def main() -> CollectingSink:
    """Run three tickets and return the sink holding every finished event."""
    sink = CollectingSink()
    report = await run_flow(pipeline, AsyncIterableSource(tickets()), sink)
    assert report.error is None
    return sink


if __name__ == "__main__":
    done = asyncio.run(main())
    for event in done.events:
        attempts = [record.attempt for record in event.trace]
        print(event.id, event.outcome, event.payload, attempts)
