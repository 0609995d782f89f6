"""KafkaSettings: where the broker is and how a worker reads from and writes to it."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from streamflow.errors import ConfigError

__all__ = ["BROKER_ENV", "KafkaSettings"]

BROKER_ENV = "STREAMFLOW_BROKER"
"""Environment variable that names the bootstrap servers when ``--broker`` is not given."""


class KafkaSettings(BaseModel):
    """How to reach the broker and how to pace reads and commits.

    Attributes:
        bootstrap: ``host:port[,host:port]`` of the brokers.
        client_id: the client id the broker sees.
        commit_interval: seconds between watermark commits.
        max_in_flight_per_partition: most records of one partition inside the worker
            at once (default: ``window // partitions * 2``, at least 1), so one hot
            partition cannot take the whole window.
        max_uncommitted_per_partition: pause a partition whose fetched-but-uncommitted
            span reaches this (bounds replay and bookkeeping behind a stuck record).
        request_timeout_ms: broker request timeout.
        session_timeout_ms: consumer group session timeout.
        auto_offset_reset: where a group with no committed offset starts.
    """

    model_config = ConfigDict(frozen=True)

    bootstrap: str
    client_id: str = "streamflow"
    commit_interval: float = Field(default=1.0, gt=0)
    max_in_flight_per_partition: int | None = Field(default=None, ge=1)
    max_uncommitted_per_partition: int = Field(default=10_000, ge=1)
    request_timeout_ms: int = Field(default=30_000, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1)
    auto_offset_reset: str = "earliest"

    @classmethod
    def from_env(cls, bootstrap: str | None = None) -> KafkaSettings:
        """Build settings from ``bootstrap`` or, failing that, ``$STREAMFLOW_BROKER``.

        Args:
            bootstrap: the ``--broker`` value, if one was given.

        Returns:
            The settings, defaults elsewhere.

        Raises:
            ConfigError: neither ``--broker`` nor ``STREAMFLOW_BROKER`` names a broker.
        """
        value = (bootstrap or os.environ.get(BROKER_ENV) or "").strip()
        if not value:
            raise ConfigError(f"no Kafka broker given: pass --broker HOST:PORT or set {BROKER_ENV}")
        return cls(bootstrap=value)
