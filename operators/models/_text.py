"""Shared text handling for the offline models: words, stems, sentences."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["STOPWORDS", "content_tokens", "split_sentences", "stem", "strip_citations"]

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_CITATION = re.compile(r"\s*\[[^\]\n]{1,40}\]")

_STOPWORD_TEXT = """
    a about above after again against all am an and any are aren as at be because been before
    being below between both but by can could did didn do does doesn doing don down during each
    few for from further had has have having he her here hers herself him himself his how i if
    in into is isn it its itself just let me more most my myself no nor not now of off on once
    only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up
    very was wasn we were what when where which while who whom why will with would you your
    yours yourself yourselves hi hello hey thanks thank please pls regards cheers dear team also
    get got im ive id youre dont cant wont s t ll re ve m d
"""

STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""English function words (and greetings) that carry no topic."""


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Strip the commonest English suffixes, so 'charged', 'charges' and 'charge' meet.

    Deliberately light: a few rules applied once, which is enough for keyword
    overlap and cheap enough to run per token on every event.
    """
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, replacement in (
        ("ations", "ate"),
        ("ation", "ate"),
        ("ies", "y"),
        ("ied", "y"),
        ("ing", ""),
        ("ed", ""),
        ("es", ""),
        ("s", ""),
        ("e", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                return word
            return word[: len(word) - len(suffix)] + replacement
    return word


def content_tokens(text: str) -> list[str]:
    """Return the stemmed words of ``text`` that carry meaning (no stopwords)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at '.', '!' or '?' followed by a capital or digit."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def strip_citations(text: str) -> str:
    """Remove citation markers such as ``[kb-012]`` from an answer."""
    return _CITATION.sub("", text)
