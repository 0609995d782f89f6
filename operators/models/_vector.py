"""A small in-memory vector index: unit vectors in a numpy matrix, cosine search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from operators.models._optional import require
from streamflow.errors import ConfigError

__all__ = ["VectorIndex", "unit_rows"]


def unit_rows(vectors: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Return ``vectors`` as a float matrix whose rows have length 1 (zero rows stay zero)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2:
        raise ConfigError(f"expected a list of vectors, got an array of shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    rows: np.ndarray = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return rows


class VectorIndex:
    """Cosine nearest neighbours over a fixed set of vectors.

    ``search`` asks scikit-learn's brute-force NearestNeighbors (exact, and the
    right choice for a few thousand rows); ``similarities`` gives every row's
    cosine at once, for scoring that boosts or filters rows.
    """

    def __init__(self, vectors: Sequence[Sequence[float]] | np.ndarray) -> None:
        """Index ``vectors`` (at least one, all of the same length).

        Raises:
            ConfigError: no vectors, or rows of different lengths.
        """
        try:
            matrix = unit_rows(vectors)
        except ValueError as exc:
            raise ConfigError(f"vectors must all have the same length: {exc}") from exc
        if matrix.shape[0] == 0:
            raise ConfigError("a vector index needs at least one vector")
        self.matrix = matrix
        neighbors = require("sklearn.neighbors", extra="offline", purpose="VectorIndex")
        self._nn = neighbors.NearestNeighbors(metric="cosine", algorithm="brute").fit(matrix)

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dims(self) -> int:
        """The length of the vectors."""
        return int(self.matrix.shape[1])

    def _query(self, vector: Sequence[float]) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float64).reshape(1, -1)
        if query.shape[1] != self.dims:
            raise ConfigError(
                f"query vector has {query.shape[1]} dimensions, the index {self.dims}; "
                "use the same embedding model for both"
            )
        return unit_rows(query)

    def search(self, vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` (row, cosine similarity) pairs, most similar first."""
        k = min(k, len(self))
        if k < 1:
            return []
        distances, rows = self._nn.kneighbors(self._query(vector), n_neighbors=k)
        return [(int(r), 1.0 - float(d)) for r, d in zip(rows[0], distances[0], strict=True)]

    def similarities(self, vector: Sequence[float]) -> np.ndarray:
        """The cosine similarity of ``vector`` to every row, in row order."""
        result: np.ndarray = self.matrix @ self._query(vector)[0]
        return result
