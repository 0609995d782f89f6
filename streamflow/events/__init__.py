"""Events and their wire format."""

from streamflow.events._codec import (
    decode_event,
    decode_input,
    dumps,
    encode_event,
    loads,
    stable_id,
)
from streamflow.events._dead_letter import DeadLetter
from streamflow.events._model import ErrorInfo, Event, Outcome, StepRecord, ticket_of

__all__ = [
    "DeadLetter",
    "ErrorInfo",
    "Event",
    "Outcome",
    "StepRecord",
    "decode_event",
    "decode_input",
    "dumps",
    "encode_event",
    "loads",
    "stable_id",
    "ticket_of",
]
