"""A fast four-stage pipeline for the chaos suite (classify -> retrieve -> generate -> check).

The steps cost microseconds, so 100,000 events per case measure the delivery
machinery, not the models. With ``CHAOS_MODEL_URL`` set, ``generate`` asks an
OpenAI-wire endpoint for each answer, with a per-call timeout and retries.
The pipeline's name comes from ``CHAOS_PIPELINE`` so each case has its own topics.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from streamflow import Event, Pipeline, RetryPolicy, Stage, map_async


class Ticket(BaseModel):
    """A support ticket as it arrives."""

    id: str
    customer: str
    text: str


def _fields(event: Event) -> dict[str, Any]:
    payload = event.payload
    return payload.model_dump() if isinstance(payload, BaseModel) else dict(payload)


def _marked(event: Event, stage: str, **changes: Any) -> Event:
    fields = _fields(event)
    fields["stages"] = [*fields.get("stages", []), stage]
    fields.update(changes)
    return event.with_payload(fields)


async def classify(event: Event) -> Event:
    text = _fields(event)["text"]
    category = "billing" if "invoice" in text else "tech" if "error" in text else "general"
    return _marked(event, "classify", category=category)


async def retrieve(event: Event) -> Event:
    return _marked(event, "retrieve", context=["kb-" + _fields(event)["category"]])


_MODEL_URL = os.environ.get("CHAOS_MODEL_URL")
_client: Any = None


async def _ask(question: str) -> str:
    global _client
    if _client is None:
        from operators.models.openai import ModelClient, ModelEndpoint

        _client = ModelClient(
            ModelEndpoint(base_url=_MODEL_URL or "", timeout_s=1.0, max_connections=128)
        )
    result = await _client.chat(question, model="streamflow-test", max_tokens=16, timeout=1.0)
    return str(result.content)


async def generate(event: Event) -> Event:
    fields = _fields(event)
    if _MODEL_URL:
        answer = await _ask(fields["text"])
    else:
        answer = "see " + fields["context"][0]
    return _marked(event, "generate", answer=answer)


async def check(event: Event) -> Event:
    if "lawyer" in _fields(event)["text"]:
        return _marked(event, "check").evolve(outcome="review", reason="legal threat")
    return _marked(event, "check")


# A hung call is cut at 1 s by the client; a 429's long Retry-After is not waited out
# (max_retry_after), so a fault costs an attempt, not a stall.
_RETRY = RetryPolicy(max_attempts=10, base_delay=0.05, max_delay=0.5, max_retry_after=0.5)

pipeline = Pipeline(
    os.environ.get("CHAOS_PIPELINE", "chaos"),
    [
        Stage("classify", map_async(classify, concurrency=64, name="classify")),
        Stage("retrieve", map_async(retrieve, concurrency=64, name="retrieve")),
        Stage(
            "generate",
            map_async(generate, concurrency=128, timeout=3.0, retry=_RETRY, name="generate"),
        ),
        Stage("check", map_async(check, concurrency=64, name="check")),
    ],
    input_model=Ticket,
    key_field="customer",
    window=512,
)
