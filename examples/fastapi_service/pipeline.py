"""The service's pipeline: route a ticket, then draft an answer (typed steps, no model needed).

Swap the steps for model-backed ones (``operators.classify``, ``operators.generate``)
and the service stays the same.
"""

from __future__ import annotations

from pydantic import BaseModel

from streamflow import Pipeline, Stage, map_async


class Ticket(BaseModel):
    """A support ticket as the client posts it."""

    id: str
    customer: str
    text: str


class Routed(BaseModel):
    """A ticket with the team it belongs to."""

    id: str
    customer: str
    text: str
    team: str


class Answer(BaseModel):
    """What the service answers."""

    id: str
    team: str
    answer: str


_TEAMS = {"invoice": "billing", "refund": "billing", "password": "accounts", "login": "accounts"}


async def route_ticket(ticket: Ticket) -> Routed:
    """Pick the team from the words of the ticket."""
    words = ticket.text.lower()
    team = next((team for word, team in _TEAMS.items() if word in words), "support")
    return Routed(**ticket.model_dump(), team=team)


async def draft_answer(ticket: Routed) -> Answer:
    """Write the first answer the team would send."""
    return Answer(
        id=ticket.id,
        team=ticket.team,
        answer=f"Thanks {ticket.customer}, the {ticket.team} team has your ticket {ticket.id}.",
    )


def build_pipeline(*, window: int = 64) -> Pipeline:
    """The pipeline the service runs; ``window`` bounds the tickets inside at once."""
    return Pipeline(
        "ticket-service",
        [
            Stage("route", map_async(route_ticket, concurrency=16)),
            Stage("answer", map_async(draft_answer, concurrency=16)),
        ],
        input_model=Ticket,
        key_field="customer",
        window=window,
    )


pipeline = build_pipeline()
