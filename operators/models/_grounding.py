"""A lexical grounding judge: how much of an answer the passages' own words support."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from operators.models._text import content_tokens, split_sentences, strip_citations
from operators.models._types import Passage, Verdict

__all__ = ["LexicalGroundingJudge"]


@lru_cache(maxsize=4096)
def _vocabulary(text: str) -> frozenset[str]:
    # The same knowledge-base passages come back for many events.
    return frozenset(content_tokens(text))


class LexicalGroundingJudge:
    """Judges groundedness by word overlap between answer sentences and passages.

    A sentence counts as supported when at least ``sentence_support`` of its
    content words (stemmed, no stopwords) occur in the passages; groundedness
    is the share of the answer's content words that sit in supported
    sentences. Citation markers are ignored. It cannot tell a negated claim
    from the claim, which an LLM judge behind the same protocol can.
    """

    def __init__(self, *, sentence_support: float = 0.6, name: str = "lexical-grounding") -> None:
        """Create a judge.

        Args:
            sentence_support: share of a sentence's words the passages must contain.
            name: the judge name written into traces.
        """
        self._support = sentence_support
        self._name = name

    @property
    def name(self) -> str:
        """The judge name written into traces."""
        return self._name

    def assess(self, answer: str, passages: Sequence[Passage]) -> Verdict:
        """Return the groundedness of ``answer`` against ``passages``, with reasons.

        Args:
            answer: the answer text.
            passages: the passages it should be drawn from.

        Returns:
            A Verdict; its reasons quote the first unsupported sentence.
        """
        if not passages:
            return Verdict(
                groundedness=0.0, reasons=["no passages to ground the answer in"], model=self._name
            )
        known: set[str] = set()
        for passage in passages:
            known |= _vocabulary(f"{passage.title} {passage.text}")
        total = supported = 0
        unsupported: list[str] = []
        sentences = split_sentences(strip_citations(answer))
        for sentence in sentences:
            words = content_tokens(sentence)
            if not words:
                continue
            total += len(words)
            hits = sum(1 for word in words if word in known)
            if hits >= self._support * len(words):
                supported += len(words)
            else:
                unsupported.append(sentence)
        if total == 0:
            return Verdict(groundedness=0.0, reasons=["the answer says nothing"], model=self._name)
        reasons: list[str] = []
        if unsupported:
            example = unsupported[0] if len(unsupported[0]) <= 80 else unsupported[0][:77] + "..."
            reasons.append(
                f"{len(unsupported)} of {len(sentences)} sentences not supported by the "
                f"passages, e.g. '{example}'"
            )
        return Verdict(groundedness=round(supported / total, 4), reasons=reasons, model=self._name)

    async def judge(
        self, answer: str, passages: Sequence[Passage], *, question: str | None = None
    ) -> Verdict:
        """Judge inline (it takes microseconds); ``question`` is not needed."""
        return self.assess(answer, passages)
