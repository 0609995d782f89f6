"""Kafka transport (the only aiokafka import): source, sink, settings and admin helpers."""

from streamflow.transports._offsets import PartitionOffsets
from streamflow.transports._routing import ID_HEADER, TRACE_HEADER
from streamflow.transports.kafka._admin import (
    consume_events,
    create_topics,
    describe_topics,
    produce_lines,
)
from streamflow.transports.kafka._errors import map_kafka_error
from streamflow.transports.kafka._settings import BROKER_ENV, KafkaSettings
from streamflow.transports.kafka._sink import KafkaSink
from streamflow.transports.kafka._source import KafkaSource, SourceStatistics

__all__ = [
    "BROKER_ENV",
    "ID_HEADER",
    "TRACE_HEADER",
    "KafkaSettings",
    "KafkaSink",
    "KafkaSource",
    "PartitionOffsets",
    "SourceStatistics",
    "consume_events",
    "create_topics",
    "describe_topics",
    "map_kafka_error",
    "produce_lines",
]
