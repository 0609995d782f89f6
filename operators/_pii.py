"""Find and redact personal data: e-mail addresses, phone numbers, payment card numbers."""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["find_pii", "luhn_valid", "redact_pii"]

_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# A phone number is 9 to 15 digits in groups; the lookarounds keep it from
# starting or ending inside a longer run of digit groups (say a 16-digit
# number that failed the card check), which is not a phone number.
_PHONE = re.compile(
    r"(?<![\w+-])(?<!\d\s)(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,5}\)[\s.-]?|\d{2,5}[\s.-]?)"
    r"\d{3,4}[\s.-]?\d{3,4}(?![\w-])(?!\s\d)"
)

_DIGIT_PAIR = re.compile(r"\d\d")

REPLACEMENTS = {"card": "[CARD]", "phone": "[PHONE]", "email": "[EMAIL]"}


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` pass the Luhn checksum that payment card numbers carry."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """Return ``(kind, start, end)`` of each piece of personal data in ``text``, in order.

    Card numbers are 13-19 digits that pass the Luhn check; a number that
    fails it is left alone (an order or tracking number, say).
    """
    found: list[tuple[str, int, int]] = []
    if _DIGIT_PAIR.search(text):
        for match in _CARD.finditer(text):
            digits = re.sub(r"\D", "", match.group())
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                found.append(("card", match.start(), match.end()))
        for match in _PHONE.finditer(text):
            count = sum(c.isdigit() for c in match.group())
            if 9 <= count <= 15 and not _overlaps(found, match.start(), match.end()):
                found.append(("phone", match.start(), match.end()))
    if "@" in text:
        for match in _EMAIL.finditer(text):
            if not _overlaps(found, match.start(), match.end()):
                found.append(("email", match.start(), match.end()))
    found.sort(key=lambda item: item[1])
    return found


def redact_pii(text: str) -> tuple[str, Counter[str]]:
    """Replace personal data in ``text`` with ``[EMAIL]``, ``[PHONE]`` or ``[CARD]``.

    Returns:
        The redacted text and how many of each kind were replaced.
    """
    spans = find_pii(text)
    counts: Counter[str] = Counter()
    if not spans:
        return text, counts
    parts: list[str] = []
    cursor = 0
    for kind, start, end in spans:
        parts.append(text[cursor:start])
        parts.append(REPLACEMENTS[kind])
        counts[kind] += 1
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts), counts


def _overlaps(spans: list[tuple[str, int, int]], start: int, end: int) -> bool:
    return any(start < s_end and s_start < end for _, s_start, s_end in spans)
