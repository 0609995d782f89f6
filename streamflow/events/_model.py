"""The Event model: one request flowing through a pipeline."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.dataclasses import dataclass

__all__ = ["ErrorInfo", "Event", "Outcome", "StepRecord", "fresh_event", "ticket_of"]

P = TypeVar("P", bound=BaseModel)

Outcome = Literal["ok", "review", "failed", "filtered"]
"""Where an event is headed: on (``ok``), to a person (``review``), to the dead
letters (``failed``), or out of the flow on purpose (``filtered``)."""


@dataclass(config=ConfigDict(extra="ignore"))
class StepRecord:
    """What one step did to one event (one line of its trace).

    A pydantic dataclass rather than a model: every event gets one per step,
    and a dataclass costs about half as much to make, encode (orjson reads it
    natively) and free. Constructing one validates its fields, as a model would.
    """

    step: str
    started_at: float
    duration_s: float
    attempt: int = 1
    outcome: str = "ok"
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    # None: a model without a known price was called (the cost is unknown, not 0).
    cost_usd: float | None = 0.0
    detail: str | None = None

    @classmethod
    def timed(
        cls,
        step: str,
        started_at: float,
        duration_s: float,
        attempt: int = 1,
        outcome: str = "ok",
        detail: str | None = None,
        *,
        model: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float | None = 0.0,
    ) -> StepRecord:
        """Build a record from values the runtime measured itself, without validation.

        Every event gets one record per step, so this is on the hot path.
        Assigning the fields one by one lets the instances share their key
        table, a third of the cost of building each one's dict (0.15 against
        0.46 µs measured). Use the normal constructor for anything that comes
        from outside.
        """
        record = _new(cls)
        record.step = step
        record.started_at = started_at
        record.duration_s = duration_s
        record.attempt = attempt
        record.outcome = outcome
        record.model = model
        record.tokens_in = tokens_in
        record.tokens_out = tokens_out
        record.cost_usd = cost_usd
        record.detail = detail
        return record


_new = object.__new__
_set = object.__setattr__


class ErrorInfo(BaseModel):
    """The last error an event met: its type, message and the step it happened in."""

    type: str
    message: str
    step: str | None = None
    retriable: bool = False


class Event(BaseModel):
    """One request in flight: a payload plus its identity, key, trace and fate.

    ``id`` is stable across retries and redelivery, so a sink can drop
    duplicates. ``key`` orders events (ordering is per key) and is the Kafka
    partition key. Steps never mutate an event: they return a changed copy
    (:meth:`evolve`, :meth:`with_payload`), which keeps fan-out branches apart.
    """

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    key: str | None = None
    payload: Any = None
    trace: list[StepRecord] = Field(default_factory=list)
    attempts: int = 0
    error: ErrorInfo | None = None
    outcome: Outcome = "ok"
    reason: str | None = None
    created_at: float = Field(default_factory=time.time)

    # Runtime bookkeeping that never goes on the wire: the credit ticket of the
    # record this event came from, and where the source found it.
    _ticket: Any = PrivateAttr(default=None)
    _origin: Any = PrivateAttr(default=None)
    _entered: tuple[float, int] | None = PrivateAttr(default=None)
    _failed_in: str | None = PrivateAttr(default=None)

    @property
    def active(self) -> bool:
        """True while the event is still on its way through the steps."""
        return self.outcome == "ok"

    def payload_as(self, model: type[P]) -> P:
        """Return the payload as ``model``, validating a dict or another model.

        Args:
            model: the pydantic model the step expects.

        Returns:
            The payload itself when it already is a ``model``, else a validated copy.

        Raises:
            pydantic.ValidationError: when the payload does not fit ``model``.
        """
        payload = self.payload
        if isinstance(payload, model):
            return payload
        if isinstance(payload, BaseModel):
            payload = payload.model_dump()
        return model.model_validate(payload)

    def evolve(self, **changes: Any) -> Event:
        """Return a copy with ``changes`` applied; runtime bookkeeping is kept."""
        return self.model_copy(update=changes)

    def with_payload(self, payload: Any) -> Event:
        """Return a copy carrying ``payload``."""
        return self.model_copy(update={"payload": payload})

    def traced(self, record: StepRecord, **changes: Any) -> Event:
        """Return a copy with ``record`` appended to the trace and ``changes`` applied."""
        changes["trace"] = [*self.trace, record]
        return self.model_copy(update=changes)

    def failed(self, error: BaseException, step: str, record: StepRecord | None = None) -> Event:
        """Return a copy headed for the dead letters because ``error`` happened in ``step``."""
        info = ErrorInfo(
            type=type(error).__name__,
            message=str(error) or type(error).__name__,
            step=step,
            retriable=bool(getattr(error, "retriable", False)),
        )
        changes: dict[str, Any] = {"outcome": "failed", "error": info, "reason": info.message}
        if record is not None:
            changes["trace"] = [*self.trace, record]
        return self.model_copy(update=changes)


def _init_runtime_state(self: Event, context: Any, /) -> None:
    # pydantic's generic initialiser deep-copies each private default, about
    # 2.5 µs per event; these defaults are immutable, so one dict literal does.
    # tests/unit/test_events.py checks that it matches the declarations. A
    # subclass's own initialiser runs first and has set the dict already.
    if getattr(self, "__pydantic_private__", None) is not None:
        return
    _set(self, "__pydantic_private__", _runtime_defaults())


def _runtime_defaults() -> dict[str, Any]:
    return {"_ticket": None, "_origin": None, "_entered": None, "_failed_in": None}


Event.model_post_init = _init_runtime_state  # type: ignore[method-assign,assignment]


def fresh_event(event_id: str, key: str | None, payload: Any) -> Event:
    """``Event(id=event_id, key=key, payload=payload)``, without validating the envelope.

    The input path makes one per record from values it has checked itself
    (a str id, a str or no key, the payload as decoded or validated), so
    validation would only repeat those checks; skipping it saves about 0.5 µs
    of every event. tests/unit/test_events_codec.py checks it equals the
    validated construction.
    """
    event = _new(Event)
    _set(
        event,
        "__dict__",
        {
            "id": event_id,
            "key": key,
            "payload": payload,
            "trace": [],
            "attempts": 0,
            "error": None,
            "outcome": "ok",
            "reason": None,
            "created_at": time.time(),
        },
    )
    _set(event, "__pydantic_fields_set__", {"id", "key", "payload"})
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", _runtime_defaults())
    return event


def ticket_of(event: Event) -> Any:
    """The credit ticket the runtime attached to ``event`` (None if it has none).

    The same as ``event._ticket``, without pydantic's slow path for private
    attributes; sinks call it once per event.
    """
    return event.__pydantic_private__["_ticket"]  # type: ignore[index]
