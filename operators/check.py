"""check: redact personal data and judge each answer before it goes out."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from operators._payload import payload_text, read_field, read_model, write_fields
from operators._pii import redact_pii
from operators._step import fail, park_for_review, step_record
from operators.generate import DraftAnswer, read_passages
from operators.models._grounding import LexicalGroundingJudge
from operators.models._ledger import traced_calls
from operators.models._types import Judge
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator, RetryPolicy, map_async

__all__ = ["CheckResult", "check", "event_outcome", "redact", "settle_check"]

CheckOutcome = Literal["pass", "review", "fail"]


class CheckResult(BaseModel):
    """What the check step found in an answer.

    Attributes:
        outcome: ``pass``, ``review`` (a person should look) or ``fail``.
        reasons: why it did not pass, one line per finding.
        redactions: kind (email, phone, card) -> how many were redacted.
        groundedness: share of the answer the passages support (0..1).
        judge: the judge that measured groundedness.
    """

    model_config = ConfigDict(frozen=True)

    outcome: CheckOutcome
    reasons: list[str] = Field(default_factory=list)
    redactions: dict[str, int] = Field(default_factory=dict)
    groundedness: float | None = None
    judge: str | None = None


def check(
    judge: Judge | None = None,
    *,
    min_groundedness: float = 0.5,
    min_chars: int = 40,
    max_chars: int = 2000,
    banned: Sequence[str | re.Pattern[str]] = (),
    require_citations: bool = True,
    redact_fields: Sequence[str] = (),
    answer_field: str = "answer",
    passages_field: str = "passages",
    question_fields: Sequence[str] = ("subject", "body", "text", "question"),
    field: str = "check",
    on_fail: Literal["review", "dead_letter"] = "review",
    concurrency: int = 64,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    into: type[BaseModel] | None = None,
    name: str = "check",
) -> Operator:
    """Redact personal data, judge each answer, and write a :class:`CheckResult`.

    ::

        in:   --a1------a2------a3----|
        out:  --a1------a2------a3----|
               pass     review  fail -> review (on_fail="review") or dead letters

    The answer is stored redacted (e-mail addresses, phone numbers, and card
    numbers that pass the Luhn check), and so are ``redact_fields`` of the
    payload (for example the ticket body). Findings that fail an answer: too
    little of it supported by the passages, too short or too long, banned
    content, citing a passage that was not retrieved. Findings that send it to
    review: no citation, personal data in the answer. A passing event stays
    ``ok``; one for review gets outcome ``review`` with the reasons as its
    reason; a failing one goes to review or, with ``on_fail="dead_letter"``, to
    the dead letters with a StepFailed naming the reasons.

    Args:
        judge: the groundedness judge; None uses a LexicalGroundingJudge.
        min_groundedness: least share of the answer the passages must support.
        min_chars: shortest acceptable answer.
        max_chars: longest acceptable answer.
        banned: phrases (whole words, any case) or compiled patterns an answer must not contain.
        require_citations: send answers that cite nothing to review.
        redact_fields: payload fields (strings) to redact as well.
        answer_field: payload field of the DraftAnswer.
        passages_field: payload field of the retrieved passages.
        question_fields: payload fields whose text is the question (for an LLM judge).
        field: payload field the CheckResult is written to.
        on_fail: ``review`` or ``dead_letter``.
        concurrency: events in flight at once.
        timeout: seconds per event.
        retry: retry policy for a failing judge.
        into: a payload model to turn the payload into, or None to keep its type.
        name: the step name in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.

    Raises:
        ConfigError: on thresholds out of range or an unknown on_fail.
    """
    if not 0.0 <= min_groundedness <= 1.0:
        raise ConfigError(f"check: min_groundedness must be within 0..1, got {min_groundedness}")
    if min_chars < 0 or max_chars < min_chars:
        raise ConfigError("check: need 0 <= min_chars <= max_chars")
    if on_fail not in ("review", "dead_letter"):
        raise ConfigError(f"check: on_fail is 'review' or 'dead_letter', not {on_fail!r}")
    backend: Judge = judge if judge is not None else LexicalGroundingJudge()
    banned_patterns = [
        p if isinstance(p, re.Pattern) else re.compile(rf"(?<!\w){re.escape(p)}(?!\w)", re.I)
        for p in banned
    ]

    async def check_answer(event: Event) -> Event:
        payload = event.payload
        updates: dict[str, Any] = {}
        redactions: Counter[str] = Counter()
        for name_ in redact_fields:
            value = read_field(payload, name_)
            if isinstance(value, str):
                cleaned, counts = redact_pii(value)
                if counts:
                    updates[name_] = cleaned
                    redactions.update(counts)
        draft = read_model(payload, answer_field, DraftAnswer)
        if draft is None:
            result = CheckResult(outcome="fail", reasons=["no answer to check"])
            return _decide(event, payload, {**updates, field: result}, result)
        text, in_answer = redact_pii(draft.text)
        redactions.update(in_answer)
        updates[answer_field] = draft.model_copy(update={"text": text}) if in_answer else draft
        passages = read_passages(payload, passages_field)
        verdict = await backend.judge(
            text, passages, question=payload_text(payload, question_fields)
        )
        failures: list[str] = []
        reviews: list[str] = []
        if verdict.groundedness < min_groundedness:
            failures.append(
                f"answer not grounded in the passages: groundedness "
                f"{verdict.groundedness:.2f} < {min_groundedness:.2f}"
            )
            failures.extend(verdict.reasons)
        if len(text) < min_chars:
            failures.append(f"answer too short: {len(text)} chars < {min_chars}")
        if len(text) > max_chars:
            failures.append(f"answer too long: {len(text)} chars > {max_chars}")
        for pattern in banned_patterns:
            hit = pattern.search(text)
            if hit:
                failures.append(f"banned content: '{hit.group()}'")
        known = {p.id for p in passages}
        unknown = [c for c in draft.citations if c not in known]
        if unknown:
            failures.append(f"cites passages that were not retrieved: {', '.join(unknown)}")
        if require_citations and not draft.citations:
            reviews.append("answer cites no passage")
        if in_answer:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(in_answer.items()))
            reviews.append(f"answer contained personal data ({kinds}), redacted")
        outcome: CheckOutcome = "fail" if failures else "review" if reviews else "pass"
        result = CheckResult(
            outcome=outcome,
            reasons=failures + reviews,
            redactions=dict(redactions),
            groundedness=verdict.groundedness,
            judge=verdict.model,
        )
        record = step_record(
            name,
            outcome=event_outcome(outcome, on_fail),
            model=verdict.model,
            tokens_in=verdict.tokens_in,
            tokens_out=verdict.tokens_out,
            cost_usd=verdict.cost_usd,
            detail=f"{outcome} groundedness={verdict.groundedness:.2f}",
        )
        return _decide(event, payload, {**updates, field: result}, result, record)

    def _decide(
        event: Event,
        payload: Any,
        updates: dict[str, Any],
        result: CheckResult,
        record: Any = None,
    ) -> Event:
        new_payload = write_fields(payload, updates, into)
        if record is None:
            record = step_record(
                name, outcome=event_outcome(result.outcome, on_fail), detail=result.outcome
            )
        return settle_check(event, new_payload, result, record, step=name, on_fail=on_fail)

    return map_async(
        traced_calls(check_answer, name),
        concurrency=concurrency,
        timeout=timeout,
        retry=retry,
        name=name,
    )


def redact(
    fields: Sequence[str] = ("subject", "body"),
    *,
    concurrency: int = 64,
    into: type[BaseModel] | None = None,
    name: str = "redact",
) -> Operator:
    """Redact personal data in payload text fields as soon as an event arrives.

    ::

        in:   --"mail me at ann@example.com"--|
        out:  --"mail me at [EMAIL]"----------|

    Put it first, so nothing downstream (the review queue, logs, a hosted
    model) sees what it removes: e-mail addresses, phone numbers, and card
    numbers that pass the Luhn check. The trace record says how many of each
    kind it replaced.

    Args:
        fields: payload fields (strings) to redact; missing ones are skipped.
        concurrency: events in flight at once.
        into: a payload model to turn the payload into, or None to keep its type.
        name: the step name in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.
    """
    names = tuple(fields)

    async def redact_personal_data(event: Event) -> Event:
        updates: dict[str, Any] = {}
        found: Counter[str] = Counter()
        for field_name in names:
            value = read_field(event.payload, field_name)
            if isinstance(value, str):
                cleaned, counts = redact_pii(value)
                if counts:
                    updates[field_name] = cleaned
                    found.update(counts)
        detail = " ".join(f"{kind}={n}" for kind, n in sorted(found.items())) or "nothing found"
        record = step_record(name, detail=detail)
        if not updates and into is None:
            return event.traced(record)
        return event.traced(record, payload=write_fields(event.payload, updates, into))

    return map_async(redact_personal_data, concurrency=concurrency, name=name)


def event_outcome(outcome: CheckOutcome, on_fail: str) -> str:
    """The event outcome a check outcome leads to (the trace record's outcome)."""
    if outcome == "pass":
        return "ok"
    if outcome == "fail" and on_fail == "dead_letter":
        return "failed"
    return "review"


def settle_check(
    event: Event, payload: Any, result: CheckResult, record: Any, *, step: str, on_fail: str
) -> Event:
    """The event after a check step wrote ``result`` into ``payload``.

    A passing answer goes on; a failing one goes to the dead letters when
    ``on_fail`` says so; anything else waits for a person (review), with the
    result's reasons.
    """
    if result.outcome == "pass":
        return event.traced(record, payload=payload)
    reason = "; ".join(result.reasons)
    if result.outcome == "fail" and on_fail == "dead_letter":
        return fail(event, payload, record, step, reason)
    return park_for_review(event, payload, record, reason)
