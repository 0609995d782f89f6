"""Typed steps: a step may take and return the payload itself, and say so in its hints.

``async def classify(t: Ticket) -> Classified`` (or a plain ``def``) is a
step of the payload: streamflow hands it the payload, records its trace
entry and puts what it returns back in the event. A step whose first
parameter is an :class:`~streamflow.events.Event` (or is not annotated) is a
step of the envelope, as before. The hints also let a pipeline check, when
it is built, that each step takes what the step before it returns.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from streamflow.errors import StepFailed, TopologyError
from streamflow.events import Event

__all__ = ["StepTypes", "compatible", "event_step", "step_types", "type_name"]

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class StepTypes:
    """What a step function takes and returns, read from its hints.

    Attributes:
        takes_event: True for a step of the envelope (``Event -> Event``).
        payload_in: the payload type a payload step takes (None: any).
        payload_out: the payload type it returns (None: not known).
        is_async: the function is a coroutine function.
    """

    takes_event: bool
    payload_in: type[Any] | None
    payload_out: type[Any] | None
    is_async: bool


def _target(fn: Callable[..., Any]) -> Callable[..., Any]:
    # A callable object's hints and async-ness are its __call__'s.
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return fn
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call if call is not None and inspect.ismethod(call) else fn


def _hints(fn: Callable[..., Any], step: str) -> tuple[Any, Any]:
    """The annotations of the first parameter and of the return value (``_EMPTY`` if none)."""
    target = _target(fn)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return _EMPTY, _EMPTY
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        return _EMPTY, _EMPTY
    first = params[0]
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        # Unresolvable string hints: only a hint that names Event is understood.
        raw = first.annotation
        if isinstance(raw, str) and raw.split(".")[-1] != "Event":
            raise TopologyError(
                f"step '{step}': its hint {raw!r} cannot be resolved; define the type at "
                "module level (or import it outside TYPE_CHECKING)"
            ) from None
        return (Event if isinstance(raw, str) else raw), _EMPTY
    return hints.get(first.name, _EMPTY), hints.get("return", _EMPTY)


def _plain(hint: Any) -> type[Any] | None:
    """The class a hint stands for (``dict[str, int]`` -> dict), or None (Any, unions)."""
    if hint is _EMPTY or hint is Any or hint is None:
        return None
    origin = typing.get_origin(hint)
    if origin is not None:
        if origin in (Awaitable, typing.Coroutine) or str(origin).endswith("Coroutine"):
            args = typing.get_args(hint)
            return _plain(args[-1]) if args else None
        return origin if isinstance(origin, type) else None
    return hint if isinstance(hint, type) else None


def step_types(fn: Callable[..., Any], step: str) -> StepTypes:
    """Read what ``fn`` takes and returns.

    Raises:
        TopologyError: a step of the envelope annotated to return something
            other than an Event (it would fail every event at run time), or a
            hint that cannot be resolved.
    """
    is_async = inspect.iscoroutinefunction(_target(fn))
    first, returns = _hints(fn, step)
    takes = _plain(first)
    out = _plain(returns)
    if takes is None or issubclass(takes, Event):
        if out is not None and not issubclass(out, Event):
            raise TopologyError(
                f"step '{step}' takes an Event but is annotated to return {type_name(out)}; "
                f"return the event (event.with_payload(...)), or make it a step of the "
                f"payload: def {step}(payload: ...) -> {type_name(out)}"
            )
        return StepTypes(True, None, None, is_async)
    return StepTypes(False, takes, out, is_async)


def type_name(kind: type[Any] | None) -> str:
    """A type's name for messages."""
    return "anything" if kind is None else kind.__name__


def compatible(have: type[Any] | None, need: type[Any] | None) -> bool:
    """True unless both types are known and ``have`` is not a ``need``."""
    if have is None or need is None or need is object:
        return True
    return issubclass(have, need)


def event_step(fn: Callable[..., Any], step: str, types: StepTypes) -> Callable[[Event], Any]:
    """Wrap ``fn`` as an async step of the envelope, unless it is one already.

    A payload step gets the payload (turned into its model first when a dict
    or another model arrives, which happens only after an untyped step; a
    payload that does not fit fails the event, naming the field) and its
    result is checked against its return hint by type only (no validation).

    Returns:
        ``fn`` itself for an async step of the envelope, else a wrapper.
    """
    if types.takes_event:
        if types.is_async:
            return fn

        async def envelope(event: Event) -> Any:
            result = fn(event)
            # A lambda or partial may still hand back an awaitable.
            return await result if inspect.isawaitable(result) else result

        envelope.__name__ = envelope.__qualname__ = step
        return envelope

    model = types.payload_in if _is_model(types.payload_in) else None
    out = types.payload_out

    async def payload_step(event: Event) -> Event:
        payload = event.payload
        if model is not None and not isinstance(payload, model):
            payload = _coerce(payload, model, step, event)
        result = fn(payload)
        if inspect.isawaitable(result):
            result = await result
        if out is not None and not isinstance(result, out):
            raise StepFailed(
                f"step '{step}' returned {type(result).__name__}, its hint says {out.__name__}",
                stage=step,
                event_id=event.id,
            )
        return event.with_payload(result)

    payload_step.__name__ = payload_step.__qualname__ = step
    return payload_step


def _is_model(kind: type[Any] | None) -> bool:
    return kind is not None and issubclass(kind, BaseModel)


def _coerce(payload: Any, model: type[Any], step: str, event: Event) -> Any:
    raw = payload.model_dump() if isinstance(payload, BaseModel) else payload
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        raise StepFailed(
            f"step '{step}': payload does not fit {model.__name__}: {where}: {error['msg']}",
            stage=step,
            event_id=event.id,
        ) from exc
