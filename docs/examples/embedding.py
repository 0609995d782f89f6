"""streamflow.open inside an application: one call at a time, a stream, and each outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel

import streamflow
from streamflow import EventFailed, EventParked, Pipeline, Stage, map_async


class Question(BaseModel):
    id: str
    text: str


class Answer(BaseModel):
    id: str
    text: str


def answer(q: Question) -> Answer:
    if not q.text.strip():
        raise ValueError("an empty question has no answer")
    return Answer(id=q.id, text=f"you asked {len(q.text.split())} words")


async def check(a: Answer) -> Answer:
    return a


pipeline = Pipeline(
    "questions",
    [Stage("answer", map_async(answer)), Stage("check", map_async(check))],
    input_model=Question,
    window=16,  # at most 16 questions inside at once, whoever sends them
)


async def questions() -> AsyncIterator[dict[str, str]]:
    for i, text in enumerate(["how are you", "", "what is streamflow"]):
        yield {"id": f"q{i + 1}", "text": text}


async def main() -> dict[str, str]:
    """Ask one question, then stream three; return what happened to each, by id."""
    seen: dict[str, str] = {}
    async with streamflow.open(pipeline) as flow:
        # One payload in, its output payload out; a dict is validated against the input model.
        first = await flow.process({"id": "q0", "text": "is anyone there"})
        seen[first.id] = first.text

        # Many in, each finished event out as it finishes, whatever its outcome.
        async for event in flow.stream(questions()):
            if event.outcome == "ok":
                seen[event.id] = event.payload.text
            else:
                seen[event.id] = f"{event.outcome}: {event.error.message if event.error else ''}"

        # process raises for an event that did not end ok.
        try:
            await flow.process(Question(id="q9", text=" "))
        except EventFailed as failed:
            letter = failed.dead_letter
            seen["q9"] = f"dead letter from {letter.stage} after {letter.attempts} attempt(s)"
        except EventParked as parked:
            seen["q9"] = f"parked: {parked.reason}"
    # Leaving the block ends the input: everything inside finished first.
    return seen


if __name__ == "__main__":
    for question, result in asyncio.run(main()).items():
        print(question, result)
