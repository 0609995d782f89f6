"""Kafka transport (the only aiokafka import): source, sink, settings, client factory, admin."""

from streamflow.transports._offsets import PartitionOffsets
from streamflow.transports._routing import ID_HEADER, TRACE_HEADER
from streamflow.transports.kafka._admin import (
    consume_events,
    create_topics,
    describe_topics,
    missing_topics,
    produce_lines,
)
from streamflow.transports.kafka._clients import (
    check_options,
    make_admin,
    make_consumer,
    make_producer,
)
from streamflow.transports.kafka._errors import map_kafka_error
from streamflow.transports.kafka._replay import GroupReader, open_group_reader
from streamflow.transports.kafka._settings import BROKER_ENV, ENV_PREFIX, KafkaSettings
from streamflow.transports.kafka._sink import KafkaSink
from streamflow.transports.kafka._source import KafkaSource, SourceStatistics

__all__ = [
    "BROKER_ENV",
    "ENV_PREFIX",
    "ID_HEADER",
    "TRACE_HEADER",
    "GroupReader",
    "KafkaSettings",
    "KafkaSink",
    "KafkaSource",
    "PartitionOffsets",
    "SourceStatistics",
    "check_options",
    "consume_events",
    "create_topics",
    "describe_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "map_kafka_error",
    "missing_topics",
    "open_group_reader",
    "produce_lines",
]
