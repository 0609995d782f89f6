"""Payload models of the support-ticket pipeline."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from operators import CheckResult, Classification, DraftAnswer, Passage

__all__ = ["Channel", "SupportCase", "Ticket"]

Channel = Literal["email", "chat", "web_form", "phone"]


class Ticket(BaseModel):
    """A customer's support request as it arrives.

    Extra fields are kept, so what the steps add to a ticket survives a trip
    through Kafka even where a stage validates its input as a Ticket.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    customer_id: str
    subject: str
    body: str
    channel: Channel = "email"


class SupportCase(Ticket):
    """A ticket together with what the pipeline made of it.

    Attributes:
        classification: its category and the confidence in it.
        passages: the knowledge-base passages found for it.
        answer: the drafted reply (redacted after the check).
        check: the verdict on the reply.
    """

    classification: Classification | None = None
    passages: list[Passage] = Field(default_factory=list)
    answer: DraftAnswer | None = None
    check: CheckResult | None = None
