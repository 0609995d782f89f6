"""Document intake: extract -> classify -> redact -> chunk -> embed and index.

Run it from the repository root::

    streamflow run examples/document_intake/pipeline.py \\
        --input examples/document_intake/data/documents.jsonl --output out/documents.jsonl

Each input line names a file: ``{"id", "path", "source"}``, the path absolute
(a file in any folder; ``references.py FOLDER`` writes the lines for a
folder) or relative to ``data/`` (or ``$DOCUMENT_INTAKE_DATA``). Set
``$DOCUMENT_INTAKE_FOLDERS`` (folders separated by ``:``) to read
only from those folders.
Records go to the output, documents that cannot be read (missing, corrupt,
no text) to the dead letters beside it, with the reason. The chunks go into
a retrieval index saved under ``out/document_index`` (or
``$DOCUMENT_INTAKE_INDEX``); :func:`search` queries it.

Offline, embeddings are hashed n-grams. With ``OPENAI_BASE_URL`` set, the
endpoint does the model work: a chat model (``$DOCUMENT_INTAKE_CHAT_MODEL``,
default ``gpt-4o-mini``) summarises each redacted document and reads out its
parties, dates, amounts and references (stage ``summarise``), and
``$DOCUMENT_INTAKE_EMBED_MODEL`` (default ``text-embedding-3-small``) embeds
the chunks.
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
from examples.document_intake.summarise import summarise_document  # noqa: E402
from operators import classify  # noqa: E402
from operators.models import ModelClient, ModelEndpoint, report_request  # noqa: E402
from streamflow import Pipeline, Stage  # noqa: E402

__all__ = ["DATA_DIR", "INDEX_DIR", "index", "pipeline", "search"]

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("DOCUMENT_INTAKE_DATA", HERE / "data"))
TRAINING = HERE / "data" / "training.jsonl"
INDEX_DIR = Path(os.environ.get("DOCUMENT_INTAKE_INDEX", "out/document_index"))
FOLDERS = [f for f in os.environ.get("DOCUMENT_INTAKE_FOLDERS", "").split(os.pathsep) if f]

# With an endpoint, one client (one connection pool, for the life of the process)
# serves the chat model and the embeddings; every HTTP attempt reaches the metrics.
client = (
    ModelClient(ModelEndpoint.from_env(), on_request=report_request)
    if (os.environ.get("OPENAI_BASE_URL"))
    else None
)


def _embedder() -> Embedder:
    if client is None:
        return HashedNgramEmbedder()
    from examples.document_intake.index import EndpointEmbedder

    model = os.environ.get("DOCUMENT_INTAKE_EMBED_MODEL", "text-embedding-3-small")
    return EndpointEmbedder(client, model)


def _summarise() -> list[Stage]:
    if client is None:
        return []
    model = os.environ.get("DOCUMENT_INTAKE_CHAT_MODEL", "gpt-4o-mini")
    return [Stage("summarise", summarise_document(client, model))]


index = DocumentIndex(_embedder(), INDEX_DIR)

pipeline = Pipeline(
    "document_intake",
    [
        Stage("extract", extract_text(DATA_DIR, folders=FOLDERS or None, concurrency=4)),
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
        # After redaction: the chat model never sees the personal data found.
        *_summarise(),
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
