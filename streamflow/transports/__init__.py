"""Transports: where records come from and where events go."""

from streamflow.transports._base import Emit, Record, Sink, Source
from streamflow.transports._files import (
    IterableSource,
    JsonlFileSource,
    JsonlSink,
    StdinSource,
    side_paths,
)
from streamflow.transports._routing import EVENT_HEADER, has_event_header
from streamflow.transports.memory import MemoryBroker, MemoryMessage, MemorySink, MemorySource

__all__ = [
    "EVENT_HEADER",
    "Emit",
    "IterableSource",
    "JsonlFileSource",
    "JsonlSink",
    "MemoryBroker",
    "MemoryMessage",
    "MemorySink",
    "MemorySource",
    "Record",
    "Sink",
    "Source",
    "StdinSource",
    "has_event_header",
    "side_paths",
]
