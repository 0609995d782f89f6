"""A JSON value that fits a JSON schema: what the test model answers to structured output.

The test model has no language skills, so its answers are made from the
schema itself: every property of an object (required or not), a value of
the right type for each, enum values chosen from what the prompt says
about them, numbers inside their bounds, arrays of at least their minimum
length. ``$ref`` into ``$defs`` and ``anyOf``/``oneOf`` (the shapes pydantic
writes for nested models and optional fields) are followed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streamflow.events import loads

__all__ = ["answer_for_schema", "schema_in_text"]

_WORD = re.compile(r"[a-z0-9]+")
_MAX_DEPTH = 16
_SCHEMA_START = re.compile(r"JSON schema:\s*")


def schema_in_text(text: str) -> dict[str, Any] | None:
    """The JSON schema quoted in ``text`` after "JSON schema:", as JSON mode prompts carry it.

    Returns:
        The schema, or None when the text quotes none that parses.
    """
    for found in _SCHEMA_START.finditer(text):
        start = found.end()
        if start >= len(text) or text[start] != "{":
            continue
        end = _object_end(text, start)
        if end is None:
            continue
        try:
            schema = loads(text[start:end].encode())
        except Exception:
            continue
        if isinstance(schema, dict):
            return schema
    return None


def _object_end(text: str, start: int) -> int | None:
    depth = 0
    quoted = escaped = False
    for i in range(start, len(text)):
        char = text[i]
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def answer_for_schema(schema: Mapping[str, Any], *, prompt: str = "", question: str = "") -> Any:
    """A value that validates against ``schema``.

    Args:
        schema: a JSON schema (draft 2020-12 subset: type, properties, required,
            items, enum, const, anyOf, oneOf, allOf, $ref/$defs, bounds).
        prompt: the whole prompt; an enum value described in it as ``- value: words``
            is chosen when those words occur in the question.
        question: the user's message, the text strings are drawn from.

    Returns:
        The value (dict, list, str, number, bool or None).
    """
    return _Answerer(schema, prompt, question).value(schema, 0, "")


class _Answerer:
    def __init__(self, root: Mapping[str, Any], prompt: str, question: str) -> None:
        self.root = root
        self.prompt = prompt
        self.question = question
        self.asked = set(_WORD.findall(question.lower()))

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}

    def value(self, schema: Mapping[str, Any], depth: int, name: str) -> Any:
        schema = self.resolve(schema)
        if depth > _MAX_DEPTH:
            return None
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self.choose(enum)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                chosen = next(
                    (o for o in options if self.resolve(o).get("type") != "null"), options[0]
                )
                return self.value(chosen, depth + 1, name)
        every = schema.get("allOf")
        if isinstance(every, list) and every:
            merged: dict[str, Any] = {}
            for part in every:
                merged.update(self.resolve(part))
            return self.value(merged, depth + 1, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            properties = schema.get("properties") or {}
            return {
                key: self.value(sub, depth + 1, key)
                for key, sub in properties.items()
                if isinstance(sub, Mapping)
            }
        if kind == "array":
            items = schema.get("items")
            count = max(int(schema.get("minItems") or 0), 1)
            maximum = schema.get("maxItems")
            if isinstance(maximum, int):
                count = min(count, maximum)
            sub = items if isinstance(items, Mapping) else {}
            return [self.value(sub, depth + 1, name) for _ in range(count)]
        if kind in ("number", "integer"):
            return self.number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.text(schema, name)

    def choose(self, options: list[Any]) -> Any:
        # An enum described in the prompt ("- billing: invoices, charges") is
        # chosen by the words its description shares with the question.
        best, best_score = options[0], 0
        for option in options:
            if not isinstance(option, str):
                continue
            line = re.search(rf"^\s*-\s*{re.escape(option)}\s*:(.*)$", self.prompt, re.MULTILINE)
            if line is None:
                continue
            words = set(_WORD.findall(f"{option} {line.group(1)}".lower().replace("_", " ")))
            score = len(words & self.asked)
            if score > best_score:
                best, best_score = option, score
        return best

    def number(self, schema: Mapping[str, Any], *, integer: bool) -> float | int:
        low = _bound(schema, "minimum", "exclusiveMinimum")
        high = _bound(schema, "maximum", "exclusiveMaximum")
        if low is not None and high is not None:
            value = low + 0.9 * (high - low)
        elif low is not None:
            value = low + 1
        elif high is not None:
            value = high - 1
        else:
            value = 1
        if integer:
            whole = round(value)
            if low is not None and whole < low:
                whole += 1
            if high is not None and whole > high:
                whole -= 1
            return int(whole)
        return round(float(value), 4)

    def text(self, schema: Mapping[str, Any], name: str) -> str:
        words = " ".join(self.question.split()[:12]) or "the request"
        text = f"{name.replace('_', ' ') or 'answer'} for: {words}"
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(text) < low:
            text = text + "." * (low - len(text))
        if isinstance(high, int) and len(text) > high:
            text = text[:high]
        return text


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str) -> float | None:
    value = schema.get(inclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    value = schema.get(exclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
