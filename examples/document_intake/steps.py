"""The steps of the document-intake pipeline after extraction: redact, chunk, index, report."""

from __future__ import annotations

import asyncio
import re
import time

import scipy.sparse as sp

from examples.document_intake.chunking import split_into_chunks
from examples.document_intake.index import DocumentIndex, IndexedChunk
from examples.document_intake.models import Chunk, IntakeRecord, ProcessedDocument
from operators import redact_pii
from streamflow.events import Event, StepRecord
from streamflow.ops import Operator, batch_async, map_async

__all__ = ["chunk_document", "index_chunks", "redact_personal_data", "report_intake"]


def redact_personal_data(*, concurrency: int = 16, name: str = "redact") -> Operator:
    """Replace e-mail addresses, phone numbers and Luhn-valid card numbers in title and text.

    ::

        in:   --d1------d2--|       d2's text holds "jane@example.org"
        out:  --d1------d2--|       d2.text holds "[EMAIL]", d2.pii == {"email": 1}

    Args:
        concurrency: documents in flight at once.
        name: the step name in traces.

    Returns:
        An Operator for a Stage.
    """

    async def redact_document(event: Event) -> Event:
        document = event.payload_as(ProcessedDocument)
        text, in_text = redact_pii(document.text)
        title, in_title = redact_pii(document.title)
        found = in_text + in_title
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(found.items())) or "none"
        redacted = document.model_copy(
            update={"text": text, "title": title, "pii": dict(sorted(found.items()))}
        )
        return event.traced(_record(name, f"redacted: {summary}"), payload=redacted)

    return map_async(redact_document, concurrency=concurrency, name=name)


def chunk_document(
    *, max_tokens: int = 200, overlap: int = 30, concurrency: int = 16, name: str = "chunk"
) -> Operator:
    """Cut each document's (redacted) text into chunks by section and paragraph.

    ::

        in:   --d1----------d2--|
        out:  --d1[c0,c1]---d2[c0]--|

    Args:
        max_tokens: token budget per chunk.
        overlap: tokens a chunk repeats from the previous one in its section.
        concurrency: documents in flight at once.
        name: the step name in traces.

    Returns:
        An Operator for a Stage.

    Raises:
        ValueError: on a bad budget or overlap.
    """
    split_into_chunks("", max_tokens=max_tokens, overlap=overlap)  # validates the arguments

    async def chunk_text(event: Event) -> Event:
        document = event.payload_as(ProcessedDocument)
        pieces = split_into_chunks(document.text, max_tokens=max_tokens, overlap=overlap)
        chunks = [
            Chunk(
                id=f"{document.id}#{number}",
                document_id=document.id,
                number=number,
                heading=piece.heading,
                text=piece.text,
                tokens=piece.tokens,
            )
            for number, piece in enumerate(pieces)
        ]
        record = _record(name, f"{len(chunks)} chunks")
        return event.traced(record, payload=document.model_copy(update={"chunks": chunks}))

    return map_async(chunk_text, concurrency=concurrency, name=name)


def index_chunks(
    index: DocumentIndex, *, max_batch: int = 32, max_wait: float = 0.05, name: str = "embed"
) -> Operator:
    """Embed the chunks of a micro-batch of documents in one call and add them to ``index``.

    ::

        in:   -d1-d2-d3------|      (max_batch=2)
        out:  ----d1d2---d3--|      one embedding call per batch, one shard per batch

    Batches run one at a time, so shards are written in order. A failing
    embedding call fails every document of its batch (dead letters).

    Args:
        index: the index to add to (and to save shards from).
        max_batch: most documents per embedding call.
        max_wait: longest wait for a batch to fill, in seconds.
        name: the step name in traces.

    Returns:
        An Operator for a Stage.
    """

    async def embed_batch(events: list[Event]) -> list[Event]:
        documents = [event.payload_as(ProcessedDocument) for event in events]
        chunks = [
            IndexedChunk(
                id=chunk.id,
                document_id=document.id,
                number=chunk.number,
                title=document.title,
                doc_type=document.classification.label if document.classification else None,
                source=document.source,
                heading=chunk.heading,
                text=chunk.text,
            )
            for document in documents
            for chunk in document.chunks
        ]
        if chunks:
            embedded = await index.embedder.embed([_embedding_text(c) for c in chunks])
            vectors = sp.csr_matrix(embedded.vectors)
            index.add(chunks, vectors)
            await asyncio.to_thread(index.save_shard, chunks, vectors)
        return [event.with_payload(doc) for event, doc in zip(events, documents, strict=True)]

    return batch_async(embed_batch, max_size=max_batch, max_wait=max_wait, name=name)


def report_intake(index_name: str, *, preview_chars: int = 240, name: str = "report") -> Operator:
    """Replace each processed document by its :class:`IntakeRecord` (no full text, no chunks).

    Args:
        index_name: the embedding model of the index, written into each record.
        preview_chars: length of the redacted text preview.
        name: the step name in traces.

    Returns:
        An Operator for a Stage.
    """

    async def make_record(event: Event) -> Event:
        document = event.payload_as(ProcessedDocument)
        label = document.classification
        preview = re.sub(r"\s+", " ", re.sub(r"(?m)^#{1,6}\s+", "", document.text)).strip()
        if len(preview) > preview_chars:
            preview = preview[:preview_chars].rsplit(" ", 1)[0] + " …"
        record = IntakeRecord(
            id=document.id,
            path=document.path,
            source=document.source,
            format=document.format,
            title=document.title,
            doc_type=label.label if label else "unknown",
            confidence=label.confidence if label else 0.0,
            chunk_count=len(document.chunks),
            pii=document.pii,
            preview=preview,
            pages=document.pages,
            chars=document.chars,
            index=index_name,
            fields=document.fields,
        )
        return event.traced(_record(name, record.doc_type), payload=record)

    return map_async(make_record, concurrency=64, name=name)


def _embedding_text(chunk: IndexedChunk) -> str:
    # The title and section heading say what a short chunk is about.
    context = " — ".join(part for part in (chunk.title, chunk.heading) if part)
    return f"{context}\n{chunk.text}" if context else chunk.text


def _record(step: str, detail: str) -> StepRecord:
    # map_async fills in the timing and attempt of a record named after its step.
    return StepRecord(step=step, started_at=time.time(), duration_s=0.0, detail=detail)
