"""Wire format: orjson bytes of the Event model (the only orjson import)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from streamflow.errors import DecodeError, EncodeError, PayloadInvalid
from streamflow.events._limits import RecordLimits, json_depth
from streamflow.events._model import ErrorInfo, Event, fresh_event

__all__ = [
    "DEFAULT_LIMITS",
    "decode_event",
    "decode_input",
    "dumps",
    "encode_bounded",
    "encode_event",
    "loads",
    "stable_id",
]

_ENVELOPE_KEYS = frozenset({"id", "payload"})
# Longer ids are refused: an id travels in headers, logs and every dead letter.
_MAX_ID_CHARS = 512

DEFAULT_LIMITS = RecordLimits()
"""The limits used when a caller names none."""


def dumps(value: Any) -> bytes:
    """Serialise a JSON-able value (pydantic models included) to bytes."""
    return orjson.dumps(value, default=_default)


def loads(data: bytes | str, *, origin: str | None = None) -> Any:
    """Parse JSON bytes.

    Args:
        data: the JSON text.
        origin: where the bytes were read, named in the error.

    Raises:
        DecodeError: when ``data`` is not valid JSON; invalid UTF-8 is named with
            the offset of the first bad byte.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        where = f" in {origin}" if origin else ""
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise DecodeError(
                    f"invalid UTF-8 at byte {bad.start}{where}: {bad.reason}"
                ) from exc
        if "depth limit" in str(exc):
            raise DecodeError(f"JSON nests too deep{where}: {exc}") from exc
        raise DecodeError(f"not valid JSON{where}: {exc}") from exc


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


def encode_bounded(event: Event, limits: RecordLimits = DEFAULT_LIMITS) -> bytes:
    """Encode ``event``, refusing what cannot be written.

    Args:
        event: a finished event.
        limits: ``max_record_bytes`` is the largest encoding accepted.

    Returns:
        The wire bytes.

    Raises:
        EncodeError: the event holds values JSON cannot carry, nests deeper than
            the encoder allows, or encodes to more than ``max_record_bytes``.
    """
    try:
        value = encode_event(event)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise EncodeError(f"event cannot be serialised: {exc}", event_id=event.id) from exc
    if len(value) > limits.max_record_bytes:
        raise EncodeError(
            f"event encodes to {len(value)} bytes, above max_record_bytes="
            f"{limits.max_record_bytes}",
            event_id=event.id,
        )
    return value


def _event_default(value: Any) -> Any:
    # Trace records are dataclasses, which orjson encodes without help.
    if type(value) is ErrorInfo:
        return value.__dict__
    if isinstance(value, BaseModel):
        return value.model_dump()
    return _default(value)


def decode_event(
    data: bytes,
    payload_model: type[BaseModel] | None = None,
    *,
    limits: RecordLimits | None = None,
    origin: str | None = None,
) -> Event:
    """Decode wire bytes into an Event, validating the payload when a model is given.

    Args:
        data: the event's wire bytes.
        payload_model: the model the payload must fit, if any.
        limits: when given, ``max_record_bytes`` is checked before parsing.
        origin: where the bytes were read, named in errors.

    Raises:
        DecodeError: too large, not JSON, or not an event envelope.
        PayloadInvalid: the payload fails ``payload_model``.
    """
    if limits is not None:
        _check_size(data, limits)
    raw = loads(data, origin=origin)
    if not isinstance(raw, dict) or not raw.keys() >= _ENVELOPE_KEYS:
        raise DecodeError("not a streamflow event: expected an object with 'id' and 'payload'")
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        raise DecodeError(
            f"not a valid event: {_first_error(exc)}", event_id=_scalar_id(raw.get("id"))
        ) from exc
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
    limits: RecordLimits = DEFAULT_LIMITS,
) -> Event:
    """Turn one input record into a new Event (input is never taken as an event).

    The record's JSON object becomes the payload of a fresh event, whatever keys
    it has (``payload``, ``trace`` or ``outcome`` included), so every input runs
    every stage. Its id comes from ``id_field`` when present, else it is derived
    from ``origin`` (file and line, or topic/partition/offset) so that reading the
    same record again gives the same id. Size is checked before parsing and depth
    right after, so no step ever sees a record beyond ``limits``.

    Args:
        data: the record's bytes.
        payload_model: the pipeline's input model, or None to keep dicts.
        origin: a stable description of where the record was read.
        key_field: payload field that becomes the event key.
        id_field: payload field that becomes the event id.
        key: an explicit key (the Kafka key) that wins over ``key_field``.
        limits: ``max_record_bytes`` and ``max_json_depth``.

    Raises:
        DecodeError: above a limit, not JSON, not a JSON object, or an id that is
            not a string or number. The error carries the record's id when its
            JSON has one.
        PayloadInvalid: the payload fails ``payload_model``.
    """
    try:
        _check_size(data, limits)
        raw = loads(data, origin=origin)
    except DecodeError as exc:
        # The dead letter still names the record when its id can be found.
        exc.event_id = exc.event_id or _salvage_id(data, id_field, limits)
        raise
    if not isinstance(raw, dict):
        raise DecodeError(f"expected a JSON object, got {_json_type(raw)}")
    raw_id = raw.get(id_field) if id_field else None
    event_id = _scalar_id(raw_id)
    if raw_id not in (None, "") and event_id is None:
        raise DecodeError(
            f"field {id_field!r} must be a string or number of at most {_MAX_ID_CHARS} "
            f"characters, got {_json_type(raw_id)}"
        )
    # A record with no object or array among its values has depth 1; otherwise
    # counting brackets bounds the depth from above (brackets inside strings only
    # over-count), so only records that might be too deep are walked. The first
    # test is cheaper than the count on a flat record.
    max_depth = limits.max_json_depth
    if (
        not _NESTING.isdisjoint(map(type, raw.values()))
        and data.count(b"{") + data.count(b"[") > max_depth
        and json_depth(raw, max_depth) > max_depth
    ):
        raise DecodeError(f"record nests deeper than max_json_depth={max_depth}", event_id=event_id)
    event_id = event_id or stable_id(origin)
    if key is None and key_field is not None and raw.get(key_field) is not None:
        key = str(raw[key_field])
    payload: Any = raw
    if payload_model is not None:
        payload = _validate_payload(raw, payload_model, event_id)
    return fresh_event(event_id, key, payload)


def _salvage_id(data: bytes, id_field: str | None, limits: RecordLimits) -> str | None:
    """The id of a record that did not decode: read leniently, or from its first key."""
    if not id_field:
        return None
    if len(data) <= limits.max_record_bytes:
        # Invalid UTF-8 (say): the rest of the record may still be readable.
        try:
            raw = orjson.loads(data.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            raw = None
        return _scalar_id(raw.get(id_field)) if isinstance(raw, dict) else None
    # Too large to parse: only an id that is the record's first key is taken.
    head = data[:1024].decode("utf-8", "replace").lstrip()
    prefix = '{"' + id_field + '":'
    if not head.replace(" ", "").startswith(prefix):
        return None
    value = head[head.index(":") + 1 :].lstrip()
    if value.startswith('"'):
        end = value.find('"', 1)
        return _scalar_id(value[1:end]) if end > 0 and "\\" not in value[:end] else None
    digits = ""
    for char in value:
        if not (char.isdigit() or char in "-."):
            break
        digits += char
    return _scalar_id(digits) if digits else None


_NESTING = frozenset((dict, list))
"""The container types orjson decodes to: a value of one of these nests."""

_SCALARS = (str, int, float)
"""The JSON value types an id may have (a tuple: ``str | int | float`` is built per call)."""


def _check_size(data: bytes, limits: RecordLimits) -> None:
    if len(data) > limits.max_record_bytes:
        raise DecodeError(
            f"record is {len(data)} bytes, above max_record_bytes={limits.max_record_bytes}"
        )


def _scalar_id(value: Any) -> str | None:
    """The id a JSON value gives, if it is a usable one (a short string or a number)."""
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        return None
    text = str(value)
    return text if text and len(text) <= _MAX_ID_CHARS else None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return names.get(type(value), type(value).__name__)


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
