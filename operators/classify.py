"""classify: label each event's text, with keyword rules and a review threshold."""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict
from reactivex import Observable

from operators._batcher import MicroBatcher
from operators._deferred import DeferredClassifier
from operators._payload import payload_text, write_fields
from operators._step import park_for_review, step_record
from operators.models._ledger import traced_calls
from operators.models._types import Classifier, Label
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Lane, Operator, RetryPolicy, map_async

__all__ = ["Classification", "DeferredClassifier", "classify", "deferred_classifiers"]

# The classify steps whose model is loaded or trained when their stage starts,
# so `streamflow train` can find them in a pipeline.
_DEFERRED: weakref.WeakKeyDictionary[Operator, DeferredClassifier] = weakref.WeakKeyDictionary()

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
    model: Classifier | str | Path | None = None,
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
        model: the classifier backend, or the path of a model file written by
            ``streamflow train`` (or ``LinearTextClassifier.save``); None trains a
            LinearTextClassifier on ``examples``. A file or examples are loaded
            or trained when the stage starts, not when the pipeline is built.
        examples: ``(text, label)`` pairs or a JSONL path: what the default
            classifier is trained on when ``model`` is None or a model file that
            does not exist yet (``streamflow train`` writes it from these).
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
        ConfigError: with neither model nor examples, a model file from another
            scikit-learn version, a missing file, or bad thresholds.
    """
    deferred: DeferredClassifier | None = None
    if model is None or isinstance(model, str | Path):
        deferred = DeferredClassifier(model_path=model, examples=examples)
        model = deferred
    if not 0.0 <= review_below <= 1.0:
        raise ConfigError(f"classify: review_below must be within 0..1, got {review_below}")
    if max_batch < 1 or max_wait <= 0:
        raise ConfigError("classify: max_batch must be >= 1 and max_wait > 0 seconds")
    backend = model
    rule_patterns = _compile_rules(rules or {})
    # A backend that calls a model per text says so (max_batch = 1), so no event waits
    # on, or fails with, another's call.
    batch_size = min(max_batch, getattr(backend, "max_batch", max_batch))
    batcher: MicroBatcher[str, Label] = MicroBatcher(
        backend.classify, max_size=batch_size, max_wait=max_wait
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

    op = map_async(
        traced_calls(classify_event, name),
        concurrency=concurrency,
        timeout=timeout,
        retry=retry,
        name=name,
    )
    if deferred is None:
        return op
    return _starting(op, deferred)


def deferred_classifiers(op: Operator) -> list[tuple[str, DeferredClassifier]]:
    """The classify steps inside ``op`` that load or train their model on start.

    Args:
        op: an operator, a stage's composed operator for instance.

    Returns:
        (step name, its DeferredClassifier) in flow order.
    """
    return [(step.name, _DEFERRED[step]) for step in op.walk() if step in _DEFERRED]


def _starting(op: Operator, deferred: DeferredClassifier) -> Operator:
    """``op``, beginning to load or train its model when a run subscribes or makes its lane."""
    inner_fn, inner_lane = op.fn, op.lane

    def fn(source: Observable[Event]) -> Observable[Event]:
        deferred.start()
        return inner_fn(source)

    def lane() -> Lane:
        deferred.start()
        assert inner_lane is not None
        return inner_lane()

    started = dataclasses.replace(op, fn=fn, lane=lane if inner_lane is not None else None)
    _DEFERRED[started] = deferred
    return started


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
