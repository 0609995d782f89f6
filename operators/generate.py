"""generate: draft an answer to each event's question from its retrieved passages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from operators._payload import payload_text, read_field, write_fields
from operators._step import step_record
from operators.models._extractive import ExtractiveComposer
from operators.models._ledger import traced_calls
from operators.models._types import AnswerComposer, Passage
from streamflow.events import Event
from streamflow.ops import Operator, RetryPolicy, map_async

__all__ = ["DraftAnswer", "generate", "read_passages"]

DEFAULT_QUESTION_FIELDS = ("subject", "body", "text", "question")


class DraftAnswer(BaseModel):
    """An answer ready for checking: its text, the passages it cites, and its cost.

    Attributes:
        text: the answer (redacted once the check step has run).
        citations: ids of the passages it draws on.
        model: the composer or LLM that wrote it.
        tokens_in, tokens_out, cost_usd: what writing it cost.
    """

    text: str
    citations: list[str] = Field(default_factory=list)
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def read_passages(payload: Any, path: str) -> list[Passage]:
    """Return the passages at ``path`` of a payload, whether models or plain dicts.

    Args:
        payload: a dict or model payload.
        path: dotted path of the passage list.

    Returns:
        The passages (an empty list when there are none).
    """
    raw = read_field(payload, path, default=[])
    return [p if isinstance(p, Passage) else Passage.model_validate(p) for p in raw]


def generate(
    composer: AnswerComposer | None = None,
    *,
    question_fields: Sequence[str] = DEFAULT_QUESTION_FIELDS,
    category_field: str | None = "classification.label",
    passages_field: str = "passages",
    feedback_field: str | None = "check",
    field: str = "answer",
    concurrency: int = 64,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    into: type[BaseModel] | None = None,
    name: str = "generate",
) -> Operator:
    """Write a :class:`DraftAnswer` for each event's question into its payload.

    ::

        in:   --q1(passages)--q2(passages)--|
        out:  --a1------------a2------------|     a = DraftAnswer(text, citations, model)

    When the payload already holds a check result at ``feedback_field`` that
    did not pass (a draft sent back for another try), its reasons are handed
    to the composer as feedback.

    Args:
        composer: the answer backend; None uses an ExtractiveComposer.
        question_fields: payload fields whose text is the question.
        category_field: dotted payload path of the category (picks the template).
        passages_field: payload field holding the retrieved passages.
        feedback_field: payload field of an earlier check result, or None.
        field: payload field the DraftAnswer is written to.
        concurrency: events in flight at once (bound the calls to an LLM here).
        timeout: seconds per event.
        retry: retry policy for a failing composer (rate limits, 5xx).
        into: a payload model to turn the payload into, or None to keep its type.
        name: the step name in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.
    """
    backend: AnswerComposer = composer if composer is not None else ExtractiveComposer()

    async def generate_answer(event: Event) -> Event:
        payload = event.payload
        question = payload_text(payload, question_fields)
        category = read_field(payload, category_field) if category_field else None
        passages = read_passages(payload, passages_field)
        feedback = _feedback(payload, feedback_field)
        composed = await backend.compose(
            question,
            category=str(category) if category is not None else None,
            passages=passages,
            feedback=feedback,
        )
        draft = DraftAnswer(
            text=composed.text,
            citations=composed.citations,
            model=composed.model,
            tokens_in=composed.tokens_in,
            tokens_out=composed.tokens_out,
            cost_usd=composed.cost_usd,
        )
        record = step_record(
            name,
            model=composed.model,
            tokens_in=composed.tokens_in,
            tokens_out=composed.tokens_out,
            cost_usd=composed.cost_usd,
            detail=f"cites {','.join(composed.citations) or 'nothing'}",
        )
        return event.traced(record, payload=write_fields(payload, {field: draft}, into))

    return map_async(
        traced_calls(generate_answer, name),
        concurrency=concurrency,
        timeout=timeout,
        retry=retry,
        name=name,
    )


def _feedback(payload: Any, path: str | None) -> str | None:
    if path is None:
        return None
    outcome = read_field(payload, f"{path}.outcome")
    if outcome is None or outcome == "pass":
        return None
    reasons = read_field(payload, f"{path}.reasons", default=[])
    return "; ".join(str(r) for r in reasons) or str(outcome)
