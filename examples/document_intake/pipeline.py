"""Document intake: extract -> classify -> redact -> chunk -> embed and index.

Run it from the repository root::

    streamflow run examples/document_intake/pipeline.py \\
        --input examples/document_intake/data/documents.jsonl --output out/documents.jsonl

Each input line names a file under ``data/``: ``{"id", "path", "source"}``.
Records go to the output, documents that cannot be read (missing, corrupt,
no text) to the dead letters beside it, with the reason. The chunks go into
a retrieval index saved under ``out/document_index`` (or
``$DOCUMENT_INTAKE_INDEX``); :func:`search` queries it.

Embeddings are offline hashed n-grams unless ``OPENAI_BASE_URL`` is set, in
which case ``$DOCUMENT_INTAKE_EMBED_MODEL`` (default
``text-embedding-3-small``) at that endpoint embeds the chunks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `streamflow run` loads this file by path; the repository root on sys.path
# lets it import its siblings as `examples.document_intake.*`, the same
# modules tests import, rather than a second copy under another name.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.document_intake.extract import extract_text  # noqa: E402
from examples.document_intake.index import (  # noqa: E402
    DocumentIndex,
    Embedder,
    HashedNgramEmbedder,
    SearchHit,
)
from examples.document_intake.models import DocumentRef  # noqa: E402
from examples.document_intake.steps import (  # noqa: E402
    chunk_document,
    index_chunks,
    redact_personal_data,
    report_intake,
)
from operators import classify  # noqa: E402
from streamflow import Pipeline, Stage  # noqa: E402

__all__ = ["DATA_DIR", "INDEX_DIR", "index", "pipeline", "search"]

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
TRAINING = DATA_DIR / "training.jsonl"
INDEX_DIR = Path(os.environ.get("DOCUMENT_INTAKE_INDEX", "out/document_index"))


def _embedder() -> Embedder:
    if not os.environ.get("OPENAI_BASE_URL"):
        return HashedNgramEmbedder()
    from examples.document_intake.index import EndpointEmbedder
    from operators.models.openai import ModelClient, ModelEndpoint

    model = os.environ.get("DOCUMENT_INTAKE_EMBED_MODEL", "text-embedding-3-small")
    # The client's pool lives as long as the process: one run of the pipeline.
    return EndpointEmbedder(ModelClient(ModelEndpoint.from_env()), model)


index = DocumentIndex(_embedder(), INDEX_DIR)

pipeline = Pipeline(
    "document_intake",
    [
        Stage("extract", extract_text(DATA_DIR, concurrency=4)),
        Stage(
            "classify",
            classify(
                examples=TRAINING,
                text_fields=("title", "text"),
                review_below=0.3,
                name="classify",
            ),
        ),
        Stage("redact", redact_personal_data()),
        Stage("chunk", chunk_document(max_tokens=160, overlap=24)),
        Stage("index", [index_chunks(index), report_intake(index.embedder.name)]),
    ],
    input_model=DocumentRef,
    key_field="id",
    summary_field="doc_type",
    window=64,
)


def search(query: str, k: int = 5) -> list[SearchHit]:
    """Return the ``k`` chunks most similar to ``query``, best first.

    Uses the index this process built; in a fresh process, the one saved in
    :data:`INDEX_DIR`.

    Args:
        query: the question or keywords.
        k: how many chunks.

    Returns:
        The hits (chunk, document id, score).
    """
    found = index if len(index) else DocumentIndex.load(INDEX_DIR, index.embedder)
    return found.search(query, k)


if __name__ == "__main__":
    for hit in search(" ".join(sys.argv[1:]) or "how do I reset my password"):
        print(f"{hit.score:.3f}  {hit.document_id:<28} {hit.chunk.heading or ''}")
