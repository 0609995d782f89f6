"""What a callable of an operator (a predicate, a selector, a side effect) is handed.

Like a step, it takes the payload when its first parameter's hint names the
payload's type (``def urgent(t: Ticket) -> bool``), else the whole Event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from streamflow.events import Event
from streamflow.ops._typed import _coerce, _hints, _plain

__all__ = ["argument_for", "argument_of"]


def argument_of(fn: Callable[..., Any], name: str) -> Callable[[Event], Any]:
    """Return what turns an event into ``fn``'s argument: the event, or its payload.

    Args:
        fn: the callable; its first parameter's hint is read the way a step's is.
        name: the operator's name, for errors.

    Returns:
        A function of the event: the event itself (hint Event, or none), the
        payload (any other hint), or the payload as the hinted pydantic model.

    Raises:
        TopologyError: the hint cannot be resolved.
    """
    return argument_for(_plain(_hints(fn, name)[0]), name)


def argument_for(model: type[Any] | None, name: str) -> Callable[[Event], Any]:
    """Return what turns an event into a value of the type ``model`` (None: the event).

    Args:
        model: the type a callable takes, read from its hint.
        name: the operator's name, for errors.

    Returns:
        A function of the event: the event (``model`` None or Event), the
        payload, or the payload as ``model`` when that is a pydantic model.
    """
    if model is None or issubclass(model, Event):
        return _same
    if not issubclass(model, BaseModel):
        return _payload

    def payload(event: Event) -> Any:
        # As for a step of the payload: a dict (after an untyped step) becomes the model.
        value = event.payload
        return value if isinstance(value, model) else _coerce(value, model, name, event)

    return payload


def _payload(event: Event) -> Any:
    return event.payload


def _same(event: Event) -> Event:
    return event
