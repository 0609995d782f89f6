"""Retrieval by embeddings from an OpenAI-compatible endpoint, and its fusion with BM25."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from operators._batcher import MicroBatcher
from operators.models._bm25 import load_articles
from operators.models._llm_calls import CallPolicy, call_model
from operators.models._llm_classify import split_usage
from operators.models._results import EmbedResult, Usage, add_costs
from operators.models._types import Article, Passage, Retrieved, Retriever
from operators.models._vector import VectorIndex
from operators.models.openai import ModelClient
from streamflow.errors import ConfigError

__all__ = ["EmbeddingRetriever", "FusionMode", "HybridRetriever"]

FusionMode = Literal["rrf", "normalised"]


class EmbeddingRetriever:
    """Cosine search over the knowledge base embedded at an endpoint.

    The articles (title and body) are embedded once, on first use, into a
    :class:`~operators.models._vector.VectorIndex`; the event whose query
    triggered it carries that cost. Queries from events in flight together
    are embedded in one request. With a category, its articles' similarities
    are raised by ``category_boost`` (a share), or only they are kept.
    """

    def __init__(
        self,
        client: ModelClient,
        model: str,
        articles: Iterable[Article] | str | Path,
        *,
        policy: CallPolicy | None = None,
        category_mode: Literal["boost", "filter"] = "boost",
        category_boost: float = 0.1,
        batch_size: int = 64,
        max_batch: int = 32,
        max_wait: float = 0.01,
    ) -> None:
        """Create a retriever (nothing is embedded until the first query).

        Args:
            client: the endpoint's client.
            model: the embedding model name.
            articles: the knowledge base, or a JSONL path of it.
            policy: limiter, retries and token counting for each call.
            category_mode: ``boost`` or ``filter`` by the asked category.
            category_boost: the boost of the asked category's articles.
            batch_size: articles per request when embedding the knowledge base.
            max_batch: most queries per request.
            max_wait: longest wait for a batch of queries to fill, in seconds.

        Raises:
            ConfigError: an empty knowledge base, duplicate ids, or a bad mode.
        """
        self._articles = (
            load_articles(articles) if isinstance(articles, str | Path) else list(articles)
        )
        if not self._articles:
            raise ConfigError("EmbeddingRetriever: the knowledge base is empty")
        if len({a.id for a in self._articles}) != len(self._articles):
            raise ConfigError("EmbeddingRetriever: article ids must be unique")
        if category_mode not in ("boost", "filter"):
            raise ConfigError(f"EmbeddingRetriever: unknown category_mode {category_mode!r}")
        self._client = client
        client.check_price(model)
        self._model = model
        self._policy = policy or CallPolicy()
        self._mode = category_mode
        self._boost = category_boost
        self._batch_size = batch_size
        self._index: VectorIndex | None = None
        self._lock = asyncio.Lock()
        self._queries: MicroBatcher[str, tuple[list[float], int, float | None]] = MicroBatcher(
            self._embed_queries, max_size=max_batch, max_wait=max_wait
        )
        self._masks = {
            category: np.array([category in a.categories for a in self._articles])
            for category in {c for a in self._articles for c in a.categories}
        }

    @property
    def name(self) -> str:
        """The embedding model name written into traces."""
        return self._model

    @property
    def articles(self) -> Sequence[Article]:
        """The knowledge base."""
        return tuple(self._articles)

    async def _embed(self, texts: list[str]) -> EmbedResult:
        policy = self._policy

        async def ask() -> EmbedResult:
            return await self._client.embed(texts, model=self._model, timeout=policy.timeout)

        estimate = sum(policy.count_tokens(t) for t in texts)
        return await call_model(ask, lambda r: r.usage, policy=policy, estimate=estimate)

    async def _ensure_index(self) -> tuple[VectorIndex, Usage | None]:
        async with self._lock:
            if self._index is not None:
                return self._index, None
            texts = [f"{a.title}\n{a.body}" for a in self._articles]
            vectors: list[list[float]] = []
            spent: Usage | None = None
            for start in range(0, len(texts), self._batch_size):
                found = await self._embed(texts[start : start + self._batch_size])
                vectors.extend(found.vectors)
                spent = found.usage if spent is None else spent + found.usage
            self._index = VectorIndex(vectors)
            return self._index, spent

    async def _embed_queries(
        self, queries: list[str]
    ) -> list[tuple[list[float], int, float | None]]:
        found = await self._embed(queries)
        shares = split_usage(found.usage, [self._policy.count_tokens(q) for q in queries])
        return [(v, t, c) for v, (t, c) in zip(found.vectors, shares, strict=True)]

    async def scores(
        self, query: str, category: str | None = None
    ) -> tuple[np.ndarray, int, float | None]:
        """Every article's similarity to ``query`` (category applied), and the tokens and cost.

        Raises:
            RateLimited, Unavailable, StepTimeout: retries were spent.
        """
        index, building = await self._ensure_index()
        vector, tokens_in, cost = await self._queries.submit(query)
        if building is not None:
            tokens_in = tokens_in + building.tokens_in
            cost = add_costs(cost, building.cost_usd)
        scores = index.similarities(vector)
        mask = self._masks.get(category) if category is not None else None
        if mask is not None:
            if self._mode == "filter":
                scores = np.where(mask, scores, -np.inf)
            else:
                scores = np.where(mask, scores + self._boost * np.abs(scores), scores)
        elif category is not None and self._mode == "filter":
            scores = np.full(len(self._articles), -np.inf)
        return scores, tokens_in, cost

    def passages(self, scores: np.ndarray, k: int) -> list[Passage]:
        """The ``k`` best articles by ``scores`` as passages (excluded ones dropped)."""
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Passage(
                id=self._articles[i].id,
                title=self._articles[i].title,
                text=self._articles[i].body,
                score=round(float(scores[i]), 4),
                categories=self._articles[i].categories,
            )
            for i in (int(j) for j in order)
            if np.isfinite(scores[i])
        ]

    async def retrieve(self, query: str, *, k: int, category: str | None = None) -> Retrieved:
        """Return the ``k`` articles most similar to ``query``, with the embedding's cost.

        Raises:
            RateLimited, Unavailable, StepTimeout: retries were spent.
        """
        if not query.strip():
            return Retrieved(passages=[])
        scores, tokens_in, cost = await self.scores(query, category)
        return Retrieved(passages=self.passages(scores, k), tokens_in=tokens_in, cost_usd=cost)


class HybridRetriever:
    """Fuses a lexical retriever (BM25) with an embedding retriever.

    ``rrf`` (reciprocal-rank fusion) scores each passage
    ``alpha / (rrf_k + rank_vector) + (1 - alpha) / (rrf_k + rank_lexical)``;
    ranks are robust to the two retrievers' different score scales.
    ``normalised`` min-max scales each list's scores to 0..1 and mixes them
    with weight ``alpha`` on the vector side. Each side is asked for
    ``depth`` passages; the fused list keeps the best ``k``.
    """

    def __init__(
        self,
        lexical: Retriever,
        vector: Retriever,
        *,
        alpha: float = 0.5,
        mode: FusionMode = "rrf",
        depth: int = 10,
        rrf_k: int = 60,
        name: str | None = None,
    ) -> None:
        """Create a hybrid retriever.

        Args:
            lexical: the keyword retriever (a BM25Index).
            vector: the embedding retriever.
            alpha: weight of the vector side, 0..1.
            mode: ``rrf`` or ``normalised``.
            depth: passages asked of each side before fusing.
            rrf_k: the rank offset of reciprocal-rank fusion.
            name: the name in traces (default ``"<lexical>+<vector>"``).

        Raises:
            ConfigError: alpha outside 0..1, an unknown mode, or depth < 1.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"HybridRetriever: alpha must be within 0..1, got {alpha}")
        if mode not in ("rrf", "normalised"):
            raise ConfigError(f"HybridRetriever: mode is 'rrf' or 'normalised', not {mode!r}")
        if depth < 1 or rrf_k < 0:
            raise ConfigError("HybridRetriever: depth must be >= 1 and rrf_k >= 0")
        self._lexical = lexical
        self._vector = vector
        self._alpha = alpha
        self._mode = mode
        self._depth = depth
        self._rrf_k = rrf_k
        # The vector side's model is what costs tokens, so it names the record's model.
        self._name = name or vector.name

    @property
    def name(self) -> str:
        """The name written into traces (the embedding model's, by default)."""
        return self._name

    async def retrieve(self, query: str, *, k: int, category: str | None = None) -> Retrieved:
        """Return the ``k`` best passages of both retrievers, fused.

        Raises:
            RateLimited, Unavailable, StepTimeout: the vector side's retries were spent.
        """
        depth = max(self._depth, k)
        lexical, vector = await asyncio.gather(
            self._lexical.retrieve(query, k=depth, category=category),
            self._vector.retrieve(query, k=depth, category=category),
        )
        fused: dict[str, float] = {}
        found: dict[str, Passage] = {}
        for weight, side in ((self._alpha, vector), (1.0 - self._alpha, lexical)):
            for rank, score in enumerate(self._side_scores(side.passages), start=1):
                passage = side.passages[rank - 1]
                found.setdefault(passage.id, passage)
                value = weight / (self._rrf_k + rank) if self._mode == "rrf" else weight * score
                fused[passage.id] = fused.get(passage.id, 0.0) + value
        best = sorted(fused, key=lambda pid: -fused[pid])[:k]
        return Retrieved(
            passages=[
                found[pid].model_copy(update={"score": round(fused[pid], 6)}) for pid in best
            ],
            tokens_in=lexical.tokens_in + vector.tokens_in,
            cost_usd=add_costs(lexical.cost_usd, vector.cost_usd),
        )

    def _side_scores(self, passages: Sequence[Passage]) -> list[float]:
        if not passages:
            return []
        scores = [p.score for p in passages]
        low, high = min(scores), max(scores)
        if high - low <= 1e-12:
            return [1.0] * len(scores)
        return [(s - low) / (high - low) for s in scores]
