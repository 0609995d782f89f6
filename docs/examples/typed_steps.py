"""Typed steps: plain functions of the payload, async or not, in a two-stage pipeline."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import streamflow
from streamflow import Pipeline, Stage, map_async


class Ticket(BaseModel):
    id: str
    customer: str
    text: str


class Classified(BaseModel):
    id: str
    customer: str
    text: str
    label: str


class Answer(BaseModel):
    id: str
    reply: str


async def classify(t: Ticket) -> Classified:
    # An async step of the payload: it gets a Ticket and returns the next payload.
    label = "billing" if "invoice" in t.text else "other"
    return Classified(**t.model_dump(), label=label)


def answer(c: Classified) -> Answer:
    # A plain (sync) step works the same way.
    return Answer(id=c.id, reply=f"about {c.label}")


pipeline = Pipeline(
    "help",
    [
        Stage("classify", map_async(classify, concurrency=8)),
        Stage("answer", map_async(answer)),
    ],
    input_model=Ticket,
    key_field="customer",
)


async def main() -> list[Answer]:
    """Run three tickets through the pipeline in this process and return the answers."""
    tickets = [
        Ticket(id="t1", customer="ada", text="my invoice is wrong"),
        Ticket(id="t2", customer="bob", text="the app crashes"),
        Ticket(id="t3", customer="ada", text="second invoice, same problem"),
    ]
    async with streamflow.open(pipeline) as flow:
        return [await flow.process(ticket) for ticket in tickets]


if __name__ == "__main__":
    for reply in asyncio.run(main()):
        print(reply)
