"""Embed chunks and find them again: offline hashed n-gram vectors, a cosine k-NN index on disk.

- :class:`HashedNgramEmbedder`: scikit-learn's ``HashingVectorizer`` over word
  unigrams and bigrams, log-scaled term counts, L2-normalised. No vocabulary
  and no training, so every worker embeds alike and the vectors of separate
  runs are comparable. It finds shared words, not shared meaning.
- :class:`EndpointEmbedder`: vectors from an OpenAI-compatible ``/embeddings``
  endpoint (through :class:`operators.models.openai.ModelClient`).
- :class:`DocumentIndex`: the chunks and their vectors, searched by cosine
  similarity with scikit-learn's brute-force ``NearestNeighbors``; it saves
  each batch as a shard (``shard-*.jsonl`` chunks + ``shard-*.npz`` vectors)
  under one folder, and :meth:`DocumentIndex.load` reads the folder back.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from streamflow.errors import ConfigError
from streamflow.events import dumps, loads

if TYPE_CHECKING:
    from operators.models.openai import ModelClient

__all__ = [
    "DocumentIndex",
    "Embedded",
    "Embedder",
    "EndpointEmbedder",
    "HashedNgramEmbedder",
    "IndexedChunk",
    "SearchHit",
]

_META = "index.json"


@dataclass(frozen=True)
class Embedded:
    """Vectors for a batch of texts (one L2-normalised row each) and what they cost."""

    vectors: sp.csr_matrix
    model: str
    tokens_in: int = 0
    cost_usd: float = 0.0


class Embedder(Protocol):
    """Turns texts into vectors; called with a batch of chunk texts at a time."""

    @property
    def name(self) -> str:
        """The embedding model name, written into traces and the index folder."""
        ...

    async def embed(self, texts: list[str]) -> Embedded:
        """Return one normalised vector per text, in order."""
        ...


class HashedNgramEmbedder:
    """Hashed word unigram and bigram counts, log-scaled and L2-normalised (offline).

    Args:
        n_features: vector width (hash buckets); 2**18 keeps collisions rare for
            a vocabulary of tens of thousands of n-grams.
    """

    def __init__(self, n_features: int = 2**18) -> None:
        self._vectorizer = HashingVectorizer(
            n_features=n_features,
            ngram_range=(1, 2),
            stop_words="english",
            strip_accents="unicode",
            alternate_sign=False,
            norm=None,
        )
        self._name = f"hashed-ngrams-{n_features}"

    @property
    def name(self) -> str:
        """``hashed-ngrams-{width}``."""
        return self._name

    def embed_now(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Embed ``texts`` on the calling thread (microseconds per text).

        Args:
            texts: the texts.

        Returns:
            A sparse matrix with one L2-normalised row per text.
        """
        counts = sp.csr_matrix(self._vectorizer.transform(list(texts)), dtype=np.float32)
        # Log-scaling keeps a word repeated ten times from outweighing ten words.
        counts.data = 1.0 + np.log(counts.data)
        return sp.csr_matrix(normalize(counts, norm="l2"))

    async def embed(self, texts: list[str]) -> Embedded:
        """Embed a batch (inline: it takes far less than a loop tick)."""
        return Embedded(self.embed_now(texts), self._name)


class EndpointEmbedder:
    """Embeddings from an OpenAI-compatible endpoint.

    Args:
        client: an open :class:`~operators.models.openai.ModelClient`.
        model: the embedding model name (``text-embedding-3-small``, ``nomic-embed-text``...).
    """

    def __init__(self, client: ModelClient, model: str) -> None:
        self._client = client
        self._model = model

    @property
    def name(self) -> str:
        """The embedding model name."""
        return self._model

    async def embed(self, texts: list[str]) -> Embedded:
        """Embed a batch in one request; rows are normalised so cosine is a dot product."""
        result = await self._client.embed(texts, model=self._model)
        dense = normalize(np.asarray(result.vectors, dtype=np.float32), norm="l2")
        return Embedded(
            sp.csr_matrix(dense),
            self._model,
            tokens_in=result.usage.tokens_in,
            cost_usd=result.usage.cost_usd,
        )


class IndexedChunk(BaseModel):
    """What the index keeps of a chunk besides its vector."""

    model_config = ConfigDict(frozen=True)

    id: str
    document_id: str
    number: int
    title: str
    doc_type: str | None = None
    source: str | None = None
    heading: str | None = None
    text: str


class SearchHit(BaseModel):
    """A chunk found for a query, with its cosine similarity (1 is identical)."""

    model_config = ConfigDict(frozen=True)

    chunk: IndexedChunk
    score: float

    @property
    def document_id(self) -> str:
        """The document the chunk belongs to."""
        return self.chunk.document_id


class DocumentIndex:
    """Chunks and their vectors, searched by cosine similarity, optionally saved to a folder.

    Adding a chunk whose id is already there replaces it, so a document that is
    delivered again (at-least-once) is not indexed twice.

    Args:
        embedder: the embedder whose vectors the index holds (queries use it too).
        folder: where to save shards; None keeps the index in memory only.

    Raises:
        ConfigError: when ``folder`` holds an index built with another embedder.
    """

    def __init__(self, embedder: Embedder, folder: str | Path | None = None) -> None:
        self.embedder = embedder
        self.folder = Path(folder) if folder is not None else None
        self._chunks: dict[str, IndexedChunk] = {}
        self._vectors: dict[str, sp.csr_matrix] = {}
        self._lock = threading.Lock()
        self._searcher: tuple[list[IndexedChunk], sp.csr_matrix, NearestNeighbors] | None = None
        self._shards = itertools.count(1)
        if self.folder is not None:
            _check_meta(self.folder, embedder.name)

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def document_ids(self) -> set[str]:
        """The ids of the documents with chunks in the index."""
        with self._lock:
            return {chunk.document_id for chunk in self._chunks.values()}

    def add(self, chunks: Sequence[IndexedChunk], vectors: sp.csr_matrix) -> None:
        """Add chunks with their vectors (row i belongs to chunk i).

        Raises:
            ValueError: when the counts differ.
        """
        if vectors.shape[0] != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        with self._lock:
            for row, chunk in enumerate(chunks):
                self._chunks[chunk.id] = chunk
                self._vectors[chunk.id] = vectors[row]
            self._searcher = None

    def save_shard(self, chunks: Sequence[IndexedChunk], vectors: sp.csr_matrix) -> Path | None:
        """Write chunks and vectors as one new shard of the folder (blocking I/O).

        The vectors file is written last and renamed into place, so a shard
        that a crash cut short is never read.

        Returns:
            The vectors file written, or None for an in-memory index.
        """
        if self.folder is None or not chunks:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_meta(self.folder, self.embedder.name, vectors.shape[1])
        stem = f"shard-{time.time_ns()}-{os.getpid()}-{next(self._shards)}"
        (self.folder / f"{stem}.jsonl").write_bytes(
            b"".join(dumps(chunk.model_dump()) + b"\n" for chunk in chunks)
        )
        partial = self.folder / f"{stem}.partial.npz"
        sp.save_npz(partial, sp.csr_matrix(vectors))
        final = self.folder / f"{stem}.npz"
        partial.replace(final)
        return final

    def search_vector(self, query: sp.csr_matrix, k: int = 5) -> list[SearchHit]:
        """Return up to ``k`` chunks nearest to ``query`` (one row), most similar first.

        Chunks with no similarity at all (score 0) are left out.
        """
        searcher = self._prepared()
        if searcher is None:
            return []
        chunks, _, neighbours = searcher
        distances, rows = neighbours.kneighbors(query, n_neighbors=min(k, len(chunks)))
        hits = [
            SearchHit(chunk=chunks[int(row)], score=round(1.0 - float(distance), 4))
            for distance, row in zip(distances[0], rows[0], strict=True)
        ]
        # A chunk with nothing in common with the query is not a hit, however few there are.
        return [hit for hit in hits if hit.score > 0.0]

    async def asearch(self, query: str, k: int = 5) -> list[SearchHit]:
        """Embed ``query`` with the index's embedder and return the ``k`` nearest chunks."""
        embedded = await self.embedder.embed([query])
        return self.search_vector(embedded.vectors[0], k)

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Like :meth:`asearch`, from synchronous code (no event loop may be running here)."""
        if isinstance(self.embedder, HashedNgramEmbedder):
            return self.search_vector(self.embedder.embed_now([query]), k)
        return asyncio.run(self.asearch(query, k))

    @classmethod
    def load(cls, folder: str | Path, embedder: Embedder | None = None) -> DocumentIndex:
        """Read every complete shard of ``folder`` into a new index.

        Args:
            folder: the index folder.
            embedder: the embedder the index was built with; None rebuilds the
                offline one the folder names (an endpoint embedder must be given).

        Returns:
            The index; a later shard's copy of a chunk replaces an earlier one.

        Raises:
            ConfigError: no index in the folder, or it needs an embedder not given.
        """
        root = Path(folder)
        meta = _read_meta(root)
        if meta is None:
            raise ConfigError(f"no document index in {root} (no {_META}); run the pipeline first")
        name = str(meta["embedder"])
        if embedder is None:
            if not name.startswith("hashed-ngrams-"):
                raise ConfigError(
                    f"the index in {root} was built with '{name}'; pass an embedder for it"
                )
            embedder = HashedNgramEmbedder(int(meta["dimensions"]))
        index = cls(embedder, root)
        # Shard names start with a nanosecond clock, so name order is write order.
        for vectors_file in sorted(root.glob("shard-*.npz")):
            if vectors_file.name.endswith(".partial.npz"):
                continue
            chunks_file = vectors_file.with_suffix(".jsonl")
            rows = [loads(line) for line in chunks_file.read_bytes().splitlines() if line]
            index.add([IndexedChunk.model_validate(r) for r in rows], sp.load_npz(vectors_file))
        return index

    def _prepared(self) -> tuple[list[IndexedChunk], sp.csr_matrix, NearestNeighbors] | None:
        with self._lock:
            if not self._chunks:
                return None
            if self._searcher is None:
                chunks = list(self._chunks.values())
                matrix = sp.csr_matrix(sp.vstack([self._vectors[c.id] for c in chunks]))
                neighbours = NearestNeighbors(metric="cosine", algorithm="brute").fit(matrix)
                self._searcher = (chunks, matrix, neighbours)
            return self._searcher


def _read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / _META
    if not path.is_file():
        return None
    meta: dict[str, Any] = loads(path.read_bytes())
    return meta


def _check_meta(folder: Path, embedder: str) -> None:
    meta = _read_meta(folder)
    if meta is not None and meta.get("embedder") != embedder:
        raise ConfigError(
            f"the index in {folder} holds '{meta.get('embedder')}' vectors, not '{embedder}'; "
            "choose another index folder or delete that one"
        )


def _write_meta(folder: Path, embedder: str, dimensions: int) -> None:
    path = folder / _META
    if not path.is_file():
        path.write_bytes(dumps({"embedder": embedder, "dimensions": int(dimensions)}))
