"""Wire format: orjson bytes of the Event model (the only orjson import)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from streamflow.errors import DecodeError, PayloadInvalid
from streamflow.events._model import ErrorInfo, Event, fresh_event

__all__ = ["decode_event", "decode_input", "dumps", "encode_event", "loads", "stable_id"]

_ENVELOPE_KEYS = frozenset({"id", "payload"})


def dumps(value: Any) -> bytes:
    """Serialise a JSON-able value (pydantic models included) to bytes."""
    return orjson.dumps(value, default=_default)


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes.

    Raises:
        DecodeError: when ``data`` is not valid JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from exc


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode_event(event: Event) -> bytes:
    """Encode an event as orjson bytes (the wire format)."""
    if type(event) is Event:
        # The same bytes as dumping model_dump(), at a third of the cost: the
        # event's own fields and records are plain values, so orjson reads them
        # directly and only the user's payload models go through pydantic.
        return orjson.dumps(event.__dict__, default=_event_default)
    return orjson.dumps(event.model_dump(), default=_default)


def _event_default(value: Any) -> Any:
    # Trace records are dataclasses, which orjson encodes without help.
    if type(value) is ErrorInfo:
        return value.__dict__
    if isinstance(value, BaseModel):
        return value.model_dump()
    return _default(value)


def decode_event(data: bytes, payload_model: type[BaseModel] | None = None) -> Event:
    """Decode wire bytes into an Event, validating the payload when a model is given.

    Raises:
        DecodeError: not JSON, or not an event envelope.
        PayloadInvalid: the payload fails ``payload_model``.
    """
    raw = loads(data)
    if not isinstance(raw, dict) or not raw.keys() >= _ENVELOPE_KEYS:
        raise DecodeError("not a streamflow event: expected an object with 'id' and 'payload'")
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        raise DecodeError(f"not a valid event: {_first_error(exc)}") from exc
    if payload_model is not None and event.active:
        event.payload = _validate_payload(event.payload, payload_model, event.id)
    return event


def decode_input(
    data: bytes,
    payload_model: type[BaseModel] | None,
    *,
    origin: str,
    key_field: str | None = None,
    id_field: str | None = "id",
    key: str | None = None,
) -> Event:
    """Turn one input record into an Event.

    A full event envelope is accepted as is; any other JSON object is taken as
    the payload and wrapped. Its id comes from ``id_field`` when present, else
    it is derived from ``origin`` (file and line, or topic/partition/offset) so
    that reading the same record again gives the same id.

    Args:
        data: the record's bytes.
        payload_model: the pipeline's input model, or None to keep dicts.
        origin: a stable description of where the record was read.
        key_field: payload field that becomes the event key.
        id_field: payload field that becomes the event id.
        key: an explicit key (the Kafka key) that wins over ``key_field``.

    Raises:
        DecodeError: not JSON or not a JSON object.
        PayloadInvalid: the payload fails ``payload_model``.
    """
    raw = loads(data)
    if isinstance(raw, dict) and raw.keys() >= _ENVELOPE_KEYS and "trace" in raw:
        event = decode_event(data, payload_model)
        if key is not None:
            event.key = key
        return event
    if not isinstance(raw, dict):
        raise DecodeError(f"expected a JSON object, got {type(raw).__name__}")
    event_id = raw.get(id_field) if id_field else None
    event_id = str(event_id) if event_id not in (None, "") else stable_id(origin)
    if key is None and key_field is not None and raw.get(key_field) is not None:
        key = str(raw[key_field])
    payload: Any = raw
    if payload_model is not None:
        payload = _validate_payload(raw, payload_model, event_id)
    return fresh_event(event_id, key, payload)


def stable_id(origin: str) -> str:
    """Derive an event id from where a record was read (same place, same id)."""
    return hashlib.blake2b(origin.encode(), digest_size=12).hexdigest()


def _validate_payload(raw: Any, model: type[BaseModel], event_id: str) -> BaseModel:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise PayloadInvalid(
            f"payload does not fit {model.__name__}: {_first_error(exc)}", event_id=event_id
        ) from exc


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more
