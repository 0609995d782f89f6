"""The summarise step: a chat model reads a redacted document and fills DocumentFields."""

from __future__ import annotations

import time

from examples.document_intake.models import DocumentFields, ProcessedDocument
from operators.models import ModelClient
from operators.models.llm import DEFAULT_MODEL_RETRY
from streamflow.events import Event, StepRecord
from streamflow.ops import Operator, RetryPolicy, map_async

__all__ = ["SYSTEM_PROMPT", "summarise_document"]

SYSTEM_PROMPT = (
    "You read business documents that arrive at a company (invoices, contracts, policies, "
    "support articles, resumes, reports) and answer with one JSON object: a summary of two or "
    "three sentences saying what the document is and what it says, and the parties, dates, "
    "money amounts and reference numbers it names, each as written in the document. Use only "
    "what the document says; leave a list empty when it names none. Personal data was replaced "
    "by placeholders such as [EMAIL]; keep the placeholders, do not guess what they hid."
)


def summarise_document(
    client: ModelClient,
    model: str,
    *,
    retry: RetryPolicy | None = DEFAULT_MODEL_RETRY,
    max_chars: int = 8000,
    max_tokens: int = 400,
    concurrency: int = 8,
    timeout: float | None = 120.0,
    name: str = "summarise",
) -> Operator:
    """Ask a chat model for each document's summary and fields (structured output).

    ::

        in:   --d1------d2--|
        out:  --d1------d2--|       each with .fields = DocumentFields(summary=..., ...)

    Put it after redaction: the model sees only the redacted title and text.
    The answer is validated against :class:`DocumentFields`; a 429 or 5xx is
    retried per ``retry`` (honouring Retry-After), and an answer that does not
    validate or retries spent make the document a dead letter with the reason.
    The trace record carries the model, tokens and cost.

    Args:
        client: the endpoint's client.
        model: the chat model.
        retry: retries of a failed call (default: 429s, 5xx and timeouts).
        max_chars: most characters of the text sent (the start of the document).
        max_tokens: the cap on the answer's tokens.
        concurrency: documents in flight at once.
        timeout: seconds per document, retries included.
        name: the step name in traces.

    Returns:
        An Operator for a Stage.
    """

    async def summarise(event: Event) -> Event:
        document = event.payload_as(ProcessedDocument)
        kind = document.classification.label if document.classification else "unknown"
        text = document.text[:max_chars]
        cut = " (the start of it)" if len(document.text) > max_chars else ""
        user = (
            f"Document type (from a classifier): {kind}\n"
            f"Title: {document.title}\n"
            f"Text{cut}:\n{text}"
        )
        answer = await client.chat(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            model=model,
            temperature=0.0,
            max_tokens=max_tokens,
            response_model=DocumentFields,
        )
        fields, usage = answer.parsed, answer.usage
        # map_async fills in the timing and attempt of a record named after its step.
        record = StepRecord(
            step=name,
            started_at=time.time(),
            duration_s=0.0,
            detail=f"{len(fields.parties)} parties, {len(fields.dates)} dates, "
            f"{len(fields.amounts)} amounts",
            model=usage.model,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cost_usd=usage.cost_usd,
        )
        return event.traced(record, payload=document.model_copy(update={"fields": fields}))

    return map_async(summarise, concurrency=concurrency, timeout=timeout, retry=retry, name=name)
