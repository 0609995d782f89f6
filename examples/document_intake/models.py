"""Payload models of the document-intake pipeline, one per point in the flow."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from operators import Classification

__all__ = [
    "Chunk",
    "DocumentFields",
    "DocumentFormat",
    "DocumentRef",
    "ExtractedDocument",
    "IntakeRecord",
    "ProcessedDocument",
]

DocumentFormat = Literal["text", "markdown", "html", "pdf"]


class DocumentRef(BaseModel):
    """One line of the input: where a document is and where it came from.

    Extra fields are kept, so what the steps add survives a trip through Kafka
    even where a stage validates its input as a DocumentRef.

    Attributes:
        id: the document id (also the event id and partition key).
        path: the file: absolute, or relative to the data folder.
        source: where the document came from (mailbox, upload, crawler...).
    """

    model_config = ConfigDict(extra="allow")

    id: str
    path: str
    source: str = "unknown"


class ExtractedDocument(DocumentRef):
    """A document with its text pulled out of the file.

    ``text`` is normalised whatever the format: blocks separated by a blank
    line, headings written as Markdown headings (``## Heading``), so the
    chunker treats every format alike.

    Attributes:
        format: the file format the text came from.
        title: the document title (metadata, first heading or first line).
        text: the normalised text.
        pages: pages in the file (PDF only).
        chars: length of the text.
    """

    format: DocumentFormat
    title: str
    text: str
    pages: int | None = None
    chars: int = 0


class Chunk(BaseModel):
    """A piece of a document small enough to embed, with the section it belongs to.

    Attributes:
        id: ``{document id}#{number}``.
        document_id: the document it was cut from.
        number: its position in the document, from 0.
        heading: the heading of the section it is in, if any.
        text: the chunk text (already redacted).
        tokens: its length in tokens (words and punctuation marks).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    document_id: str
    number: int
    heading: str | None = None
    text: str
    tokens: int


class DocumentFields(BaseModel):
    """What a chat model read out of a (redacted) document.

    Attributes:
        summary: two or three sentences: what the document is and what it says.
        parties: organisations and people the document names.
        dates: dates that matter (due, effective, incident ...), as written.
        amounts: money amounts with their currency, as written.
        references: invoice, contract, order or case numbers.
    """

    summary: str = Field(description="Two or three sentences: what the document is and says.")
    parties: list[str] = Field(description="Organisations and people the document names.")
    dates: list[str] = Field(
        description="Dates that matter (due, effective, incident), as written."
    )
    amounts: list[str] = Field(description="Money amounts with their currency, as written.")
    references: list[str] = Field(description="Invoice, contract, order or case numbers.")


class ProcessedDocument(ExtractedDocument):
    """An extracted document together with what the steps made of it.

    Attributes:
        classification: its document type and the confidence in it.
        pii: kind of personal data (email, phone, card) -> how many were redacted.
        fields: the summary and fields a chat model read out of it (with an endpoint).
        chunks: the chunks cut from the redacted text.
    """

    classification: Classification | None = None
    pii: dict[str, int] = Field(default_factory=dict)
    fields: DocumentFields | None = None
    chunks: list[Chunk] = Field(default_factory=list)


class IntakeRecord(BaseModel):
    """What the pipeline reports for each document it took in.

    Attributes:
        id: the document id.
        path: the file, as the reference named it.
        source: where it came from.
        format: the file format.
        title: the title (redacted).
        doc_type: the document type the classifier gave it.
        confidence: the classifier's confidence, 0..1.
        chunk_count: chunks added to the retrieval index.
        pii: kind of personal data -> how many were redacted.
        preview: the start of the redacted text, whitespace collapsed.
        pages: pages in the file (PDF only).
        chars: length of the extracted text.
        index: the embedding model of the retrieval index the chunks went into.
        fields: the summary and fields a chat model read out of it (with an endpoint).
    """

    id: str
    path: str
    source: str
    format: DocumentFormat
    title: str
    doc_type: str
    confidence: float
    chunk_count: int
    pii: dict[str, int] = Field(default_factory=dict)
    preview: str
    pages: int | None = None
    chars: int
    index: str
    fields: DocumentFields | None = None
