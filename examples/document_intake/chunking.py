"""Cut normalised document text into chunks by section and paragraph, within a token budget."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TextChunk", "count_tokens", "split_into_chunks"]

# Words (with inner apostrophes, dots or hyphens) and single punctuation marks.
# Subword tokenizers give about 1.3 tokens per such unit on English prose, so a
# budget in these units is a fair stand-in when no model tokenizer is at hand.
_TOKEN = re.compile(r"\w+(?:['\u2019.\-]\w+)*|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


@dataclass(frozen=True)
class TextChunk:
    """One chunk: its text, the heading of its section, and its length in tokens."""

    text: str
    heading: str | None
    tokens: int


def count_tokens(text: str) -> int:
    """Count words and punctuation marks in ``text``."""
    return len(_TOKEN.findall(text))


def split_into_chunks(text: str, *, max_tokens: int = 200, overlap: int = 30) -> list[TextChunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens.

    A heading (``#`` to ``######``) starts a new chunk, so a chunk never mixes
    two sections. Within a section, whole paragraphs are packed together; a
    paragraph longer than the budget is cut at sentence ends, and a sentence
    longer than the budget at word boundaries. When a section runs over into
    a further chunk, that chunk starts with the last ``overlap`` tokens' worth
    of sentences of the one before, so a passage cut at a boundary is still
    found whole in one of them.

    Args:
        text: blocks separated by blank lines, headings as Markdown headings.
        max_tokens: the budget per chunk (the overlap included).
        overlap: tokens repeated from the previous chunk of the same section.

    Returns:
        The chunks in document order; none for blank text.

    Raises:
        ValueError: when the budget is not positive or the overlap not below half of it.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap <= max_tokens // 2:
        raise ValueError(f"overlap must be within 0..max_tokens/2, got {overlap}")
    chunks: list[TextChunk] = []
    for heading, paragraphs in _sections(text):
        chunks.extend(_pack(heading, paragraphs, max_tokens, overlap))
    return chunks


def _sections(text: str) -> list[tuple[str | None, list[str]]]:
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        match = _HEADING.match(block)
        if match and "\n" not in block:
            sections.append((match.group(2).strip(), []))
        else:
            sections[-1][1].append(block)
    # A heading with nothing under it still says something worth finding.
    return [(h, p or ([h] if h else [])) for h, p in sections if p or h]


def _pack(
    heading: str | None, paragraphs: list[str], max_tokens: int, overlap: int
) -> list[TextChunk]:
    # Units are sentences or sentence pieces, each within the budget; a
    # paragraph break is kept as a separator between units.
    units: list[tuple[str, int, bool]] = []  # (text, tokens, starts a paragraph)
    for paragraph in paragraphs:
        for i, piece in enumerate(_fit(paragraph, max_tokens)):
            units.append((piece, count_tokens(piece), i == 0))
    chunks: list[TextChunk] = []
    current: list[tuple[str, int, bool]] = []
    size = 0
    fresh = 0  # units in ``current`` that no earlier chunk holds
    for unit in units:
        if current and size + unit[1] > max_tokens:
            chunks.append(_chunk(heading, current))
            current = _tail(current, overlap, max_tokens - unit[1])
            size = sum(u[1] for u in current)
            fresh = 0
        current.append(unit)
        size += unit[1]
        fresh += 1
    if current and fresh:
        chunks.append(_chunk(heading, current))
    return chunks


def _fit(paragraph: str, max_tokens: int) -> list[str]:
    if count_tokens(paragraph) <= max_tokens:
        return [paragraph]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        if count_tokens(sentence) <= max_tokens:
            pieces.append(sentence)
            continue
        words: list[str] = []
        for word in sentence.split():
            if words and count_tokens(" ".join([*words, word])) > max_tokens:
                pieces.append(" ".join(words))
                words = []
            words.append(word)
        if words:
            pieces.append(" ".join(words))
    return pieces


def _tail(
    units: list[tuple[str, int, bool]], overlap: int, room: int
) -> list[tuple[str, int, bool]]:
    kept: list[tuple[str, int, bool]] = []
    size = 0
    for unit in reversed(units):
        if size + unit[1] > min(overlap, room):
            break
        kept.insert(0, unit)
        size += unit[1]
    return kept


def _chunk(heading: str | None, units: list[tuple[str, int, bool]]) -> TextChunk:
    text = ""
    for i, (piece, _, starts_paragraph) in enumerate(units):
        if i:
            text += "\n\n" if starts_paragraph else " "
        text += piece
    return TextChunk(text=text, heading=heading, tokens=sum(u[1] for u in units))
