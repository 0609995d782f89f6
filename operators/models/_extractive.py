"""An extractive answer composer: the reply is made of knowledge-base sentences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from operators.models._text import content_tokens, split_sentences
from operators.models._types import ComposedAnswer, Passage

__all__ = ["AnswerTemplate", "ExtractiveComposer"]


@dataclass(frozen=True)
class AnswerTemplate:
    """The words around the extracted sentences of a reply.

    Attributes:
        greeting: the first line.
        lead: a line that introduces the extracted sentences ('' for none).
        closing: the last line.
        fallback: the body when no passage answers the question.
    """

    greeting: str = "Hi, thanks for getting in touch."
    lead: str = ""
    closing: str = "If anything is still unclear, reply to this message and we will follow up."
    fallback: str = (
        "We could not find an article that answers this, so a specialist will look into it "
        "and get back to you."
    )


@lru_cache(maxsize=4096)
def _sentences(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    # Knowledge-base passages repeat across events: split and stem each one once.
    return tuple((s, frozenset(content_tokens(s))) for s in split_sentences(text))


class ExtractiveComposer:
    """Builds a reply from the passage sentences that best overlap the question.

    Every sentence of the body is quoted from a passage and followed by its
    citation (``[kb-012]``), so the answer is grounded by construction; the
    per-category template supplies greeting, lead and closing. When an earlier
    draft failed a check (``feedback``), it answers more narrowly: fewer
    sentences, and only the best passage's.
    """

    def __init__(
        self,
        *,
        templates: Mapping[str, AnswerTemplate] | None = None,
        default_template: AnswerTemplate | None = None,
        max_sentences: int = 3,
        name: str = "extractive",
    ) -> None:
        """Create a composer.

        Args:
            templates: a template per category (the classified label).
            default_template: the template for other categories.
            max_sentences: most sentences quoted in one reply.
            name: the composer name written into traces.
        """
        self._templates = dict(templates or {})
        self._default = default_template or AnswerTemplate()
        self._max_sentences = max(1, max_sentences)
        self._name = name

    @property
    def name(self) -> str:
        """The composer name written into traces."""
        return self._name

    def template_for(self, category: str | None) -> AnswerTemplate:
        """Return the template of ``category``, or the default one."""
        if category is None:
            return self._default
        return self._templates.get(category, self._default)

    def compose_text(
        self,
        question: str,
        *,
        category: str | None,
        passages: Sequence[Passage],
        feedback: str | None = None,
    ) -> ComposedAnswer:
        """Write the reply (synchronously; it takes microseconds).

        Args:
            question: the customer's question.
            category: the classified category, which picks the template.
            passages: retrieved passages, best first.
            feedback: reasons an earlier draft failed a check, if any.

        Returns:
            The reply with the ids of the passages it quotes.
        """
        template = self.template_for(category)
        limit = 1 if feedback else self._max_sentences
        usable = list(passages[:1] if feedback else passages)
        asked = frozenset(content_tokens(question))
        top_score = max((p.score for p in usable), default=0.0) or 1.0
        scored: list[tuple[float, int, int, str, str]] = []
        for rank, passage in enumerate(usable):
            for position, (sentence, words) in enumerate(_sentences(passage.text)):
                overlap = len(asked & words)
                if overlap:
                    score = overlap + 0.5 * passage.score / top_score
                    scored.append((score, rank, position, sentence, passage.id))
        if not scored and usable:
            # Nothing overlaps word for word: the best passage's opening still
            # answers more often than a fallback does.
            opening = _sentences(usable[0].text)[:limit]
            scored = [(0.0, 0, i, s, usable[0].id) for i, (s, _) in enumerate(opening)]
        chosen = sorted(scored, key=lambda item: -item[0])[:limit]
        chosen.sort(key=lambda item: (item[1], item[2]))
        lines = [template.greeting]
        citations: list[str] = []
        if chosen:
            if template.lead:
                lines.append(template.lead)
            lines.append(" ".join(f"{sentence} [{pid}]" for _, _, _, sentence, pid in chosen))
            for _, _, _, _, pid in chosen:
                if pid not in citations:
                    citations.append(pid)
        else:
            lines.append(template.fallback)
        lines.append(template.closing)
        return ComposedAnswer(text="\n\n".join(lines), citations=citations, model=self._name)

    async def compose(
        self,
        question: str,
        *,
        category: str | None,
        passages: Sequence[Passage],
        feedback: str | None = None,
    ) -> ComposedAnswer:
        """Write the reply (inline; see :meth:`compose_text`)."""
        return self.compose_text(question, category=category, passages=passages, feedback=feedback)
