"""classify: label each event's text, with keyword rules and a review threshold."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from operators._batcher import MicroBatcher
from operators._payload import payload_text, write_fields
from operators._step import park_for_review, step_record
from operators.models._linear import LinearTextClassifier
from operators.models._types import Classifier, Label
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator, RetryPolicy, map_async

__all__ = ["Classification", "classify"]

DEFAULT_TEXT_FIELDS = ("subject", "body", "text")


class Classification(BaseModel):
    """The category an event was given, how sure that is, and who decided it.

    Attributes:
        label: the category.
        confidence: 0..1; a rule match counts as 1.0.
        method: ``model`` or ``rule``.
        model: the classifier's name (None for a rule).
    """

    model_config = ConfigDict(frozen=True)

    label: str
    confidence: float
    method: Literal["model", "rule"] = "model"
    model: str | None = None


def classify(
    model: Classifier | None = None,
    *,
    examples: Iterable[tuple[str, str]] | str | Path | None = None,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    field: str = "classification",
    review_below: float = 0.45,
    rules: Mapping[str, Sequence[str]] | None = None,
    concurrency: int = 64,
    max_batch: int = 32,
    max_wait: float = 0.01,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    into: type[BaseModel] | None = None,
    name: str = "classify",
) -> Operator:
    """Label each event and write a :class:`Classification` into its payload.

    ::

        in:   --t1--t2--t3--|        t2 says "chargeback" (a rule), t3 is vague
        out:  --c1--c2--c3--|        c2 method=rule, c3 outcome=review

    Keyword ``rules`` are tried first and win over the model (confidence 1.0,
    method ``rule``). Otherwise the model labels the text; texts from events in
    flight together go to it as one batch. A confidence below ``review_below``
    parks the event for a person (outcome ``review``, reason ``low confidence
    ...``); its classification is still written.

    Args:
        model: the classifier backend; None trains a LinearTextClassifier on ``examples``.
        examples: ``(text, label)`` pairs or a JSONL path, used when ``model`` is None.
        text_fields: payload fields whose text is classified (missing ones are skipped).
        field: payload field the Classification is written to.
        review_below: confidence under which an event goes to review (0 disables).
        rules: label -> keywords or phrases (whole words, any case) that decide the label.
        concurrency: events in flight at once.
        max_batch: most texts per model call.
        max_wait: longest wait for a batch to fill, in seconds.
        timeout: seconds per event; a late one is retried or failed.
        retry: retry policy for a failing model call.
        into: a payload model to turn the payload into (one that declares the
            fields later steps write), or None to keep its type.
        name: the step name in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.

    Raises:
        ConfigError: with neither model nor examples, or bad thresholds.
    """
    if model is None:
        if examples is None:
            raise ConfigError("classify: pass model=... or examples=... to train the default")
        model = LinearTextClassifier.from_examples(examples)
    if not 0.0 <= review_below <= 1.0:
        raise ConfigError(f"classify: review_below must be within 0..1, got {review_below}")
    if max_batch < 1 or max_wait <= 0:
        raise ConfigError("classify: max_batch must be >= 1 and max_wait > 0 seconds")
    backend = model
    rule_patterns = _compile_rules(rules or {})
    batcher: MicroBatcher[str, Label] = MicroBatcher(
        backend.classify, max_size=max_batch, max_wait=max_wait
    )

    async def classify_event(event: Event) -> Event:
        text = payload_text(event.payload, text_fields)
        for label, pattern in rule_patterns:
            if pattern.search(text):
                found = Classification(label=label, confidence=1.0, method="rule")
                record = step_record(name, detail=f"rule: {label}")
                return event.traced(
                    record, payload=write_fields(event.payload, {field: found}, into)
                )
        predicted = await batcher.submit(text)
        found = Classification(
            label=predicted.label,
            confidence=predicted.confidence,
            method="model",
            model=backend.name,
        )
        payload = write_fields(event.payload, {field: found}, into)
        if predicted.confidence < review_below:
            reason = (
                f"low confidence {predicted.confidence:.3f} < {review_below:g} "
                f"for '{predicted.label}'"
            )
            record = step_record(
                name,
                outcome="review",
                model=backend.name,
                tokens_in=predicted.tokens_in,
                tokens_out=predicted.tokens_out,
                cost_usd=predicted.cost_usd,
                detail=reason,
            )
            return park_for_review(event, payload, record, reason)
        record = step_record(
            name,
            model=backend.name,
            tokens_in=predicted.tokens_in,
            tokens_out=predicted.tokens_out,
            cost_usd=predicted.cost_usd,
            detail=predicted.label,
        )
        return event.traced(record, payload=payload)

    return map_async(
        classify_event, concurrency=concurrency, timeout=timeout, retry=retry, name=name
    )


def _compile_rules(rules: Mapping[str, Sequence[str]]) -> list[tuple[str, re.Pattern[str]]]:
    compiled: list[tuple[str, re.Pattern[str]]] = []
    for label, keywords in rules.items():
        if isinstance(keywords, str):
            raise ConfigError(f"classify: rules[{label!r}] must be a list of keywords, not a str")
        words = [k.strip() for k in keywords if k.strip()]
        if not words:
            continue
        alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words)
        compiled.append((label, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)))
    return compiled
