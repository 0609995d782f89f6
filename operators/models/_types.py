"""What the model backends return, and the protocols a backend implements.

A backend is any object with the right async method and a ``name`` (the model
name written into traces). The offline defaults live in
:mod:`operators.models.offline`; an HTTP backend (an OpenAI-compatible
endpoint) plugs in behind the same step factory by implementing the same
protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnswerComposer",
    "Article",
    "Classifier",
    "ComposedAnswer",
    "Judge",
    "Label",
    "Passage",
    "Retrieved",
    "Retriever",
    "Verdict",
]


class Label(BaseModel):
    """One classifier decision: the label and how sure the model is of it."""

    model_config = ConfigDict(frozen=True)

    label: str
    confidence: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = 0.0


class Article(BaseModel):
    """One knowledge-base article."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    body: str
    categories: tuple[str, ...] = ()


class Passage(BaseModel):
    """A retrieved piece of the knowledge base, with its relevance score."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    text: str
    score: float
    categories: tuple[str, ...] = ()


class Retrieved(BaseModel):
    """What a retriever found for one query, and what finding it cost."""

    passages: list[Passage]
    tokens_in: int = 0
    cost_usd: float | None = 0.0


class ComposedAnswer(BaseModel):
    """A drafted answer with the passages it cites and what writing it cost."""

    text: str
    citations: list[str] = Field(default_factory=list)
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = 0.0


class Verdict(BaseModel):
    """A judge's view of an answer: how much of it the passages support, and why not."""

    groundedness: float
    reasons: list[str] = Field(default_factory=list)
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = 0.0


@runtime_checkable
class Classifier(Protocol):
    """Labels texts; called with micro-batches."""

    @property
    def name(self) -> str:
        """The model name written into traces."""
        ...

    @property
    def labels(self) -> Sequence[str]:
        """Every label the classifier can return."""
        ...

    async def classify(self, texts: list[str]) -> list[Label]:
        """Return one Label per text, in order."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Finds the passages of a knowledge base that answer a query."""

    @property
    def name(self) -> str:
        """The retriever (or embedding model) name written into traces."""
        ...

    async def retrieve(self, query: str, *, k: int, category: str | None = None) -> Retrieved:
        """Return up to ``k`` passages, best first; ``category`` may filter or boost."""
        ...


@runtime_checkable
class AnswerComposer(Protocol):
    """Writes an answer to a question from retrieved passages."""

    @property
    def name(self) -> str:
        """The model name written into traces."""
        ...

    async def compose(
        self,
        question: str,
        *,
        category: str | None,
        passages: Sequence[Passage],
        feedback: str | None = None,
    ) -> ComposedAnswer:
        """Return an answer citing the ids of the passages it used.

        ``feedback`` is set when an earlier draft failed a check: the reasons,
        so the next draft can avoid them.
        """
        ...


@runtime_checkable
class Judge(Protocol):
    """Judges whether an answer is supported by the passages it was drawn from."""

    @property
    def name(self) -> str:
        """The model name written into traces."""
        ...

    async def judge(
        self, answer: str, passages: Sequence[Passage], *, question: str | None = None
    ) -> Verdict:
        """Return the share of the answer the passages support (0..1) and the reasons."""
        ...
