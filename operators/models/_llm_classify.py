"""Classifiers over an OpenAI-compatible endpoint: an LLM answering JSON, embedding centroids."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from operators.models._linear import load_labelled_examples
from operators.models._llm_calls import CallPolicy, ask_json, call_model
from operators.models._results import EmbedResult, Usage, add_costs
from operators.models._types import Label
from operators.models._vector import unit_rows
from operators.models.openai import ModelClient
from streamflow.errors import ConfigError, StepFailed

__all__ = [
    "ClassifierAnswer",
    "EmbeddingCentroidClassifier",
    "LLMClassifier",
    "LLMLabel",
    "UnknownLabel",
    "split_usage",
]


class ClassifierAnswer(BaseModel):
    """The JSON an LLM classifier must answer with.

    Each classifier asks with a subclass whose schema lists its labels as an
    enum (so a server that constrains output to the schema picks one of them);
    the answer is still read as a string and matched case-insensitively.
    """

    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str = ""


class LLMLabel(Label):
    """A Label from an LLM, with the model's one-line reason for it."""

    model_config = ConfigDict(frozen=True)

    reason: str = ""


class UnknownLabel(StepFailed):
    """The model answered a label that is not one of the classifier's labels.

    Attributes:
        label: what the model answered.
        model: the model.
    """

    def __init__(self, message: str, *, label: str, model: str) -> None:
        super().__init__(message)
        self.label = label
        self.model = model


def split_usage(usage: Usage, weights: Sequence[int]) -> list[tuple[int, float | None]]:
    """Share one call's input tokens and cost among the items of a batch.

    The shares are whole tokens and add up exactly to the call's tokens, so
    per-event traces sum to what the endpoint billed.

    Args:
        usage: the batch call's usage.
        weights: a size per item (its own token count, say).

    Returns:
        (tokens_in, cost_usd) per item, in order.
    """
    if not weights:
        return []
    sizes = [max(w, 0) for w in weights]
    if sum(sizes) == 0:
        sizes = [1] * len(sizes)
    total = sum(sizes)
    shares = [usage.tokens_in * w // total for w in sizes]
    shares[0] += usage.tokens_in - sum(shares)
    billed = usage.tokens_in or 1
    cost = usage.cost_usd
    return [(s, None if cost is None else cost * s / billed) for s in shares]


class LLMClassifier:
    """Asks a chat model for ``{label, confidence, reason}`` as JSON, one text per call.

    The answer is validated with pydantic; a label outside ``labels`` (after
    trimming and matching case) raises :class:`UnknownLabel`, a StepFailed, so
    the event goes to the dead letters with the label the model made up.
    """

    def __init__(
        self,
        client: ModelClient,
        model: str,
        labels: Sequence[str],
        *,
        descriptions: Mapping[str, str] | None = None,
        instructions: str = "You sort customer support tickets into categories.",
        policy: CallPolicy | None = None,
        max_tokens: int = 120,
        temperature: float | None = 0.0,
    ) -> None:
        """Create a classifier.

        Args:
            client: the endpoint's client.
            model: the chat model name.
            labels: every label the model may answer.
            descriptions: label -> what it covers, put into the prompt.
            instructions: the first line of the system prompt.
            policy: limiter, retries and token counting for each call.
            max_tokens: the cap on the answer's tokens.
            temperature: sampling temperature (0 for repeatable labels).

        Raises:
            ConfigError: no labels, or duplicates.
        """
        if not labels or len(set(labels)) != len(labels):
            raise ConfigError("LLMClassifier: give a non-empty list of distinct labels")
        self._client = client
        client.check_price(model)
        self._model = model
        self._labels = tuple(labels)
        self._by_folded = {label.strip().casefold(): label for label in self._labels}
        self._policy = policy or CallPolicy()
        self._max_tokens = max_tokens
        self._temperature = temperature
        lines = [
            f"- {label}: {(descriptions or {}).get(label, '')}".rstrip(": ") for label in labels
        ]
        self._answer_model: type[ClassifierAnswer] = create_model(
            "ClassifierAnswer",
            __base__=ClassifierAnswer,
            label=(str, Field(json_schema_extra={"enum": list(self._labels)})),
        )
        self._system = (
            f"{instructions}\nChoose exactly one label from this list:\n"
            + "\n".join(lines)
            + "\nGive your confidence from 0 to 1 and a one-line reason."
        )

    max_batch = 1
    """Texts per :meth:`classify` call that ``classify(...)`` sends: one, since each text is
    its own model call anyway, and a batch would tie the texts' fates together."""

    @property
    def name(self) -> str:
        """The model name written into traces."""
        return self._model

    @property
    def labels(self) -> Sequence[str]:
        """Every label the classifier can return."""
        return self._labels

    async def classify(self, texts: list[str]) -> list[Label]:
        """Label each text with its own call; the calls of a batch run concurrently.

        Raises:
            UnknownLabel: the model answered a label not in ``labels``.
            ModelOutputInvalid: the answer is not the JSON asked for.
            RateLimited, Unavailable, StepTimeout: retries were spent.
        """
        return list(await asyncio.gather(*(self._classify_one(text) for text in texts)))

    async def _classify_one(self, text: str) -> Label:
        answer, usage = await ask_json(
            self._client,
            self._model,
            system=self._system,
            user=text,
            answer_model=self._answer_model,
            policy=self._policy,
            temperature=self._temperature,
            max_tokens=self._max_tokens,
        )
        label = self._by_folded.get(answer.label.strip().casefold())
        if label is None:
            raise UnknownLabel(
                f"model {self._model!r} answered label {answer.label!r}, which is not one of "
                f"{', '.join(self._labels)}",
                label=answer.label,
                model=self._model,
            )
        return LLMLabel(
            label=label,
            confidence=answer.confidence,
            reason=answer.reason,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cost_usd=usage.cost_usd,
        )


class EmbeddingCentroidClassifier:
    """Nearest label centroid by cosine, over embeddings of labelled examples.

    The examples are embedded once, on first use (the event that triggers it
    carries that cost in its trace). Each label's centroid is the mean of its
    examples' unit vectors; a text gets the label of the closest centroid, and
    its confidence is the softmax of the cosine similarities at
    ``temperature``, so a narrow margin between two labels reads as doubt.
    """

    def __init__(
        self,
        client: ModelClient,
        model: str,
        examples: Iterable[tuple[str, str]] | str | Path,
        *,
        policy: CallPolicy | None = None,
        temperature: float = 0.05,
        batch_size: int = 64,
    ) -> None:
        """Create a classifier (nothing is embedded until the first call).

        Args:
            client: the endpoint's client.
            model: the embedding model name.
            examples: ``(text, label)`` pairs or a JSONL path of them.
            policy: limiter, retries and token counting for each call.
            temperature: softmax temperature over cosine similarities.
            batch_size: texts per embedding request when embedding the examples.

        Raises:
            ConfigError: fewer than two labels, or a bad temperature or batch size.
        """
        pairs = (
            load_labelled_examples(examples) if isinstance(examples, str | Path) else list(examples)
        )
        self._labels = tuple(sorted({label for _, label in pairs}))
        if len(self._labels) < 2:
            raise ConfigError("EmbeddingCentroidClassifier: give examples of at least two labels")
        if temperature <= 0 or batch_size < 1:
            raise ConfigError("EmbeddingCentroidClassifier: temperature > 0, batch_size >= 1")
        self._client = client
        client.check_price(model)
        self._model = model
        self._examples = pairs
        self._policy = policy or CallPolicy()
        self._temperature = temperature
        self._batch_size = batch_size
        self._centroids: np.ndarray | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        """The embedding model name written into traces."""
        return self._model

    @property
    def labels(self) -> Sequence[str]:
        """Every label the classifier can return."""
        return self._labels

    async def _embed(self, texts: list[str]) -> EmbedResult:
        policy = self._policy

        async def ask() -> EmbedResult:
            return await self._client.embed(texts, model=self._model, timeout=policy.timeout)

        estimate = sum(policy.count_tokens(t) for t in texts)
        return await call_model(ask, lambda r: r.usage, policy=policy, estimate=estimate)

    async def _ensure_centroids(self) -> tuple[np.ndarray, Usage | None]:
        async with self._lock:
            if self._centroids is not None:
                return self._centroids, None
            texts = [text for text, _ in self._examples]
            vectors: list[list[float]] = []
            spent: Usage | None = None
            for start in range(0, len(texts), self._batch_size):
                found = await self._embed(texts[start : start + self._batch_size])
                vectors.extend(found.vectors)
                spent = found.usage if spent is None else spent + found.usage
            rows = unit_rows(vectors)
            names = [label for _, label in self._examples]
            centroids = np.stack(
                [rows[[n == label for n in names]].mean(axis=0) for label in self._labels]
            )
            self._centroids = unit_rows(centroids)
            return self._centroids, spent

    async def classify(self, texts: list[str]) -> list[Label]:
        """Embed ``texts`` in one request and label each by its nearest centroid.

        Raises:
            RateLimited, Unavailable, StepTimeout: retries were spent.
        """
        if not texts:
            return []
        centroids, building = await self._ensure_centroids()
        found = await self._embed(texts)
        similarities = unit_rows(found.vectors) @ centroids.T
        scaled = similarities / self._temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        probabilities = np.exp(scaled)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        shares = split_usage(found.usage, [self._policy.count_tokens(t) for t in texts])
        labels: list[Label] = []
        for i, (tokens_in, cost) in enumerate(shares):
            best = int(np.argmax(probabilities[i]))
            if i == 0 and building is not None:
                tokens_in = tokens_in + building.tokens_in
                cost = add_costs(cost, building.cost_usd)
            labels.append(
                Label(
                    label=self._labels[best],
                    confidence=round(float(probabilities[i, best]), 4),
                    tokens_in=tokens_in,
                    cost_usd=cost,
                )
            )
        return labels
