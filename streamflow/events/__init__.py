"""Events and their wire format."""

from streamflow.events._codec import (
    DEFAULT_LIMITS,
    decode_event,
    decode_input,
    dumps,
    encode_bounded,
    encode_event,
    loads,
    stable_id,
)
from streamflow.events._dead_letter import (
    DeadLetter,
    encode_dead_letter,
    failing_step_attempts,
    make_dead_letter,
)
from streamflow.events._limits import RecordLimits
from streamflow.events._model import ErrorInfo, Event, Outcome, StepRecord, ticket_of

__all__ = [
    "DEFAULT_LIMITS",
    "DeadLetter",
    "ErrorInfo",
    "Event",
    "Outcome",
    "RecordLimits",
    "StepRecord",
    "decode_event",
    "decode_input",
    "dumps",
    "encode_bounded",
    "encode_dead_letter",
    "encode_event",
    "failing_step_attempts",
    "loads",
    "make_dead_letter",
    "stable_id",
    "ticket_of",
]
