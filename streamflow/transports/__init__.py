"""Transports: where records come from and where events go."""

from streamflow.transports._base import Emit, FullSink, Record, Sink, Source
from streamflow.transports._files import (
    IterableSource,
    JsonlFileSource,
    JsonlSink,
    OutputPaths,
    ResultFile,
    StdinSource,
    WriteMode,
    check_result_file,
    plan_outputs,
    side_paths,
)
from streamflow.transports._objects import (
    END_OF_INPUT,
    AsyncIterableSource,
    CollectingSink,
    QueueSource,
)
from streamflow.transports._routing import EVENT_HEADER, has_event_header
from streamflow.transports.memory import MemoryBroker, MemoryMessage, MemorySink, MemorySource

__all__ = [
    "END_OF_INPUT",
    "EVENT_HEADER",
    "AsyncIterableSource",
    "CollectingSink",
    "Emit",
    "FullSink",
    "IterableSource",
    "JsonlFileSource",
    "JsonlSink",
    "MemoryBroker",
    "MemoryMessage",
    "MemorySink",
    "MemorySource",
    "OutputPaths",
    "QueueSource",
    "Record",
    "ResultFile",
    "Sink",
    "Source",
    "StdinSource",
    "WriteMode",
    "check_result_file",
    "has_event_header",
    "plan_outputs",
    "side_paths",
]
