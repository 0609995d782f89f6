"""Python objects in: a payload or an Event from an application becomes an event."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from streamflow.errors import PayloadInvalid
from streamflow.events import Event
from streamflow.runtime._report import lookup_field

__all__ = ["event_from_item"]


def event_from_item(
    item: object,
    payload_model: type[BaseModel] | None,
    *,
    origin: str,
    key_field: str | None = None,
    id_field: str | None = "id",
) -> Event:
    """Turn one object from an object source into a fresh event.

    An :class:`Event` goes in as it is (a copy, so the caller's stays untouched).
    Any other object is the payload: validated against ``payload_model`` when
    it is not already an instance of it, its id taken from ``id_field`` when
    present (else a unique id: an object has no position to derive one from),
    its key from ``key_field``.

    Args:
        item: the payload or Event.
        payload_model: the pipeline's input model, or None to take payloads as they are.
        origin: where the object came from (unique per object).
        key_field: payload field that becomes the event key.
        id_field: payload field that becomes the event id.

    Returns:
        The event.

    Raises:
        PayloadInvalid: the payload does not fit ``payload_model``.
    """
    if isinstance(item, Event):
        return item.model_copy()
    payload: Any = item
    found = lookup_field(payload, id_field) if id_field else None
    event_id = str(found) if found not in (None, "") else origin
    if payload_model is not None and not isinstance(payload, payload_model):
        try:
            source = payload.model_dump() if isinstance(payload, BaseModel) else payload
            payload = payload_model.model_validate(source)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "payload"
            raise PayloadInvalid(
                f"payload does not fit {payload_model.__name__}: {where}: {first['msg']}",
                event_id=event_id,
            ) from exc
    key = lookup_field(payload, key_field) if key_field else None
    return Event(id=event_id, key=str(key) if key is not None else None, payload=payload)
