"""Read and write fields on payloads that are dicts (after Kafka decoding) or pydantic models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["MISSING", "payload_text", "read_field", "read_model", "to_plain", "write_fields"]

M = TypeVar("M", bound=BaseModel)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Returned by :func:`read_field` when the path does not exist."""


def read_field(payload: Any, path: str, default: Any = None) -> Any:
    """Return the value at a dotted ``path`` of a dict or model payload.

    Args:
        payload: a dict, a pydantic model, or any object with attributes.
        path: a field name or dotted path such as ``classification.label``.
        default: returned when a part of the path is missing or None.

    Returns:
        The value found, or ``default``.
    """
    value = payload
    for part in path.split("."):
        if value is None:
            return default
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        else:
            value = getattr(value, part, MISSING)
        if value is MISSING:
            return default
    return default if value is None else value


def read_model(payload: Any, path: str, model: type[M]) -> M | None:
    """Return the value at ``path`` as a ``model`` (None when it is missing).

    A payload that came through Kafka holds plain dicts where one in a single
    process may hold the model itself, or another model with the same fields.

    Raises:
        pydantic.ValidationError: the value does not fit ``model``.
    """
    raw = read_field(payload, path)
    if raw is None or isinstance(raw, model):
        return raw
    return model.model_validate(raw.model_dump() if isinstance(raw, BaseModel) else raw)


def payload_text(payload: Any, fields: Sequence[str]) -> str:
    """Join the text of ``fields`` of a payload (e.g. subject and body) into one string."""
    parts: list[str] = []
    for name in fields:
        value = read_field(payload, name)
        if value:
            parts.append(str(value))
    return "\n".join(parts)


def to_plain(value: Any) -> Any:
    """Turn models (also inside lists and dicts) into plain JSON-ready values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    return value


def write_fields(payload: Any, updates: dict[str, Any], into: type[BaseModel] | None = None) -> Any:
    """Return a copy of ``payload`` with ``updates`` set; the payload itself is left as it was.

    A dict payload gets plain values, so it looks the same in one process as
    after a trip through Kafka. A model payload keeps its type when it declares
    the fields or allows extra ones; otherwise it becomes a dict, so no result
    is ever dropped.

    Args:
        payload: a dict or a pydantic model.
        updates: field name to value (models or plain values).
        into: a model to turn the result into (for example a case model that
            declares the fields every step writes), or None to keep the type.

    Returns:
        The updated payload.
    """
    if into is not None and not isinstance(payload, into):
        base = payload.model_dump() if isinstance(payload, BaseModel) else dict(payload or {})
        return into.model_validate({**base, **updates})
    if isinstance(payload, BaseModel):
        model = type(payload)
        fields = model.model_fields
        if model.model_config.get("extra") == "allow" or all(name in fields for name in updates):
            return payload.model_copy(update=updates)
        return {**payload.model_dump(), **to_plain(updates)}
    if isinstance(payload, dict):
        return {**payload, **to_plain(updates)}
    if payload is None:
        return to_plain(updates)
    raise TypeError(f"cannot write fields on a payload of type {type(payload).__name__}")
