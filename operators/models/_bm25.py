"""BM25 retrieval over a small knowledge base, on the bm25s library."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from operators.models._optional import require, require_installed
from operators.models._text import content_tokens
from operators.models._types import Article, Passage, Retrieved
from streamflow.errors import ConfigError

__all__ = ["BM25Index", "load_articles"]

CategoryMode = Literal["boost", "filter"]


def load_articles(path: str | Path) -> list[Article]:
    """Read knowledge-base articles from a JSONL file.

    Each line has ``id``, ``title``, ``body`` and optionally ``categories``
    (a list) or ``category`` (one name).

    Args:
        path: the JSONL file.

    Returns:
        The articles in file order.

    Raises:
        ConfigError: when the file is missing or a line is not an article.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"knowledge base: no file at {file}")
    articles: list[Article] = []
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row: dict[str, Any] = json.loads(line)
            categories = row.get("categories") or ([row["category"]] if row.get("category") else [])
            try:
                articles.append(
                    Article(
                        id=str(row["id"]),
                        title=row["title"],
                        body=row["body"],
                        categories=tuple(categories),
                    )
                )
            except KeyError as exc:
                raise ConfigError(f"{file}:{number}: article lacks {exc}") from exc
    return articles


class BM25Index:
    """Okapi BM25 over article titles and bodies, with an optional category preference.

    Queries and articles go through the same light stemming and stopword
    removal; a title counts twice, since titles name the topic. A query takes
    tens of microseconds on a few hundred articles, so it runs inline.
    """

    def __init__(
        self,
        articles: Iterable[Article],
        *,
        name: str = "bm25",
        category_mode: CategoryMode = "boost",
        category_boost: float = 0.5,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        """Index ``articles``.

        Args:
            articles: the knowledge base.
            name: the retriever name written into traces.
            category_mode: with a category, ``boost`` raises the scores of its
                articles by ``category_boost`` (a share), ``filter`` keeps only them.
            category_boost: the boost for articles of the asked category.
            k1: BM25 term-frequency saturation.
            b: BM25 length normalisation.

        Raises:
            ConfigError: on an empty knowledge base, duplicate ids or a bad mode.
        """
        self._articles = list(articles)
        if not self._articles:
            raise ConfigError("BM25Index: the knowledge base is empty")
        ids = [a.id for a in self._articles]
        if len(set(ids)) != len(ids):
            raise ConfigError("BM25Index: article ids must be unique")
        if category_mode not in ("boost", "filter"):
            raise ConfigError(
                f"BM25Index: category_mode is 'boost' or 'filter', not {category_mode!r}"
            )
        self._name = name
        self._mode = category_mode
        self._boost = category_boost
        self._k1, self._b = k1, b
        # Built on the first search: building a pipeline (in every process that
        # loads its file) must not index anything, nor import bm25s.
        self._bm25: Any = None
        # ... but a missing extra still fails here, when the pipeline is built.
        require_installed("bm25s", extra="offline", purpose="BM25Index")
        self._passages = [
            Passage(id=a.id, title=a.title, text=a.body, score=0.0, categories=a.categories)
            for a in self._articles
        ]
        self._by_category: dict[str, np.ndarray] = {}
        for category in {c for a in self._articles for c in a.categories}:
            self._by_category[category] = np.array(
                [category in a.categories for a in self._articles], dtype=bool
            )

    @classmethod
    def from_jsonl(cls, path: str | Path, **options: Any) -> BM25Index:
        """Index the articles of a JSONL file (see :func:`load_articles`).

        Raises:
            ConfigError: when the file is missing or malformed.
        """
        return cls(load_articles(path), **options)

    @property
    def name(self) -> str:
        """The retriever name written into traces."""
        return self._name

    @property
    def articles(self) -> Sequence[Article]:
        """The indexed articles."""
        return tuple(self._articles)

    def search(self, query: str, *, k: int = 3, category: str | None = None) -> list[Passage]:
        """Return up to ``k`` passages matching ``query``, best first (zero scores dropped).

        Args:
            query: the question, in any words.
            k: most passages returned.
            category: prefer (or keep only) articles of this category.

        Returns:
            Passages with their BM25 scores.
        """
        tokens = content_tokens(query)
        if not tokens or k < 1:
            return []
        scores = np.asarray(self._index().get_scores(tokens), dtype=np.float64)
        mask = self._by_category.get(category) if category is not None else None
        if mask is not None:
            if self._mode == "filter":
                scores = np.where(mask, scores, 0.0)
            else:
                scores = np.where(mask, scores * (1.0 + self._boost), scores)
        elif category is not None and self._mode == "filter":
            return []
        top = min(k, len(scores))
        best = np.argpartition(-scores, top - 1)[:top]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [
            self._passages[int(i)].model_copy(update={"score": round(float(scores[i]), 4)})
            for i in best
            if scores[i] > 0.0
        ]

    def _index(self) -> Any:
        if self._bm25 is None:
            bm25s = require("bm25s", extra="offline", purpose="BM25Index")
            corpus = [content_tokens(f"{a.title} {a.title} {a.body}") for a in self._articles]
            index = bm25s.BM25(k1=self._k1, b=self._b)
            index.index(corpus, show_progress=False)
            self._bm25 = index
        return self._bm25

    async def retrieve(self, query: str, *, k: int, category: str | None = None) -> Retrieved:
        """Find passages for ``query`` (inline: it takes microseconds)."""
        return Retrieved(passages=self.search(query, k=k, category=category))
