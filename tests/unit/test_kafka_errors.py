"""Every aiokafka error maps to exactly one streamflow transport error."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka_errors

from streamflow.errors import (
    TransportBroken,
    TransportClosed,
    TransportError,
    TransportRetriable,
)
from streamflow.transports.kafka import map_kafka_error


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (kafka_errors.ConsumerStoppedError(), TransportClosed),
        (kafka_errors.ProducerClosed(), TransportClosed),
        (kafka_errors.KafkaConnectionError("connection reset"), TransportRetriable),
        (kafka_errors.NoBrokersAvailable(), TransportRetriable),
        (kafka_errors.KafkaTimeoutError(), TransportRetriable),
        (kafka_errors.RequestTimedOutError(), TransportRetriable),
        (kafka_errors.NotLeaderForPartitionError(), TransportRetriable),
        (kafka_errors.GroupCoordinatorNotAvailableError(), TransportRetriable),
        (kafka_errors.CommitFailedError("rebalanced"), TransportRetriable),
        (kafka_errors.RebalanceInProgressError(), TransportRetriable),
        (kafka_errors.UnknownMemberIdError(), TransportRetriable),
        (kafka_errors.ProducerFenced(), TransportBroken),
        (kafka_errors.TopicAuthorizationFailedError(), TransportBroken),
        (kafka_errors.GroupAuthorizationFailedError(), TransportBroken),
        (kafka_errors.UnsupportedVersionError(), TransportBroken),
        (kafka_errors.MessageSizeTooLargeError(), TransportBroken),
        (kafka_errors.KafkaConfigurationError("bad option"), TransportBroken),
        (kafka_errors.CorruptRecordException(), TransportBroken),
        (ConnectionRefusedError("refused"), TransportRetriable),
        (TimeoutError(), TransportRetriable),
        (ValueError("unexpected"), TransportBroken),
    ],
)
def test_aiokafka_errors_map_to_one_transport_error(
    raised: BaseException, expected: type[TransportError]
) -> None:
    mapped = map_kafka_error(raised)
    assert type(mapped) is expected
    assert mapped.__cause__ is raised
    assert type(raised).__name__ in str(mapped)


def test_every_aiokafka_error_class_maps_to_a_transport_error() -> None:
    classes = [
        cls
        for cls in vars(kafka_errors).values()
        if isinstance(cls, type) and issubclass(cls, kafka_errors.KafkaError)
    ]
    assert len(classes) > 50
    for cls in classes:
        try:
            instance = cls()
        except TypeError:
            instance = cls("message")
        mapped = map_kafka_error(instance)
        assert type(mapped) in (TransportClosed, TransportRetriable, TransportBroken), cls


def test_only_retriable_mappings_say_retriable() -> None:
    assert map_kafka_error(kafka_errors.KafkaConnectionError()).retriable
    assert not map_kafka_error(kafka_errors.ProducerFenced()).retriable
    assert not map_kafka_error(kafka_errors.ConsumerStoppedError()).retriable


def test_topic_and_partition_travel_as_attributes() -> None:
    mapped = map_kafka_error(kafka_errors.NotLeaderForPartitionError(), topic="t.in", partition=2)
    assert (mapped.topic, mapped.partition) == ("t.in", 2)
    assert "t.in/2" in str(mapped)


def test_a_transport_error_is_returned_unchanged() -> None:
    original = TransportBroken("already mapped", topic="t")
    assert map_kafka_error(original) is original
