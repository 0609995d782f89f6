"""Transports: where records come from and where events go."""

from streamflow.transports._base import Emit, Record, Sink, Source
from streamflow.transports._files import (
    IterableSource,
    JsonlFileSource,
    JsonlSink,
    OutputPaths,
    ResultFile,
    StdinSource,
    WriteMode,
    plan_outputs,
    side_paths,
)
from streamflow.transports.memory import MemoryBroker, MemoryMessage, MemorySink, MemorySource

__all__ = [
    "Emit",
    "IterableSource",
    "JsonlFileSource",
    "JsonlSink",
    "MemoryBroker",
    "MemoryMessage",
    "MemorySink",
    "MemorySource",
    "OutputPaths",
    "Record",
    "ResultFile",
    "Sink",
    "Source",
    "StdinSource",
    "WriteMode",
    "plan_outputs",
    "side_paths",
]
