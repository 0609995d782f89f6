"""KafkaSettings: how to reach the brokers (address, TLS, SASL) and how to pace reads and commits.

One settings model serves every command and every aiokafka client. Its
environment names are aiokafka's argument names under ``STREAMFLOW_KAFKA_``
(``STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS``, ``STREAMFLOW_KAFKA_SECURITY_PROTOCOL``,
``STREAMFLOW_KAFKA_SASL_PASSWORD``, ...); ``STREAMFLOW_BROKER`` still names the
bootstrap servers when the longer name is not set. Anything else aiokafka
takes goes through ``options`` (``STREAMFLOW_KAFKA_OPTIONS='{"linger_ms": 20}'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamflow.errors import ConfigError

__all__ = ["BROKER_ENV", "ENV_PREFIX", "RESERVED_OPTIONS", "KafkaSettings"]

BROKER_ENV = "STREAMFLOW_BROKER"
"""Short name for the bootstrap servers (``STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS`` wins)."""

ENV_PREFIX = "STREAMFLOW_KAFKA_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

RESERVED_OPTIONS: Mapping[str, str] = {
    "bootstrap_servers": "bootstrap_servers (--broker)",
    "client_id": "client_id",
    "security_protocol": "security_protocol",
    "ssl_context": "ssl_cafile / ssl_certfile / ssl_keyfile",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_plain_username": "sasl_username",
    "sasl_plain_password": "sasl_password",
    "sasl_oauth_token_provider": "sasl_oauth_token_provider",
    # These carry streamflow's delivery guarantees; the runtime sets them.
    "group_id": "",
    "enable_auto_commit": "",
    "loop": "",
}
"""aiokafka arguments ``options`` may not set: they have a setting of their own, or
streamflow's delivery guarantee depends on them."""


class _BrokerAlias(PydanticBaseSettingsSource):
    """``STREAMFLOW_BROKER`` as the bootstrap servers, below the prefixed name."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(BROKER_ENV, "").strip()
        return {"bootstrap_servers": value} if value else {}


class KafkaSettings(BaseSettings):
    """How to reach the brokers, and how a worker paces reads and commits.

    Every field can be set in the environment as ``STREAMFLOW_KAFKA_<FIELD>``.
    Secrets are ``SecretStr``: they print as ``**********`` in reprs, logs and
    errors, and only the client factory reads their value.

    Attributes:
        bootstrap_servers: ``host:port[,host:port]`` of the brokers.
        client_id: the client id the broker sees.
        security_protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        ssl_cafile: CA bundle that signs the brokers' certificates (default: the system's).
        ssl_certfile: client certificate (mutual TLS).
        ssl_keyfile: client private key (mutual TLS).
        ssl_password: password of the client key, if it has one.
        ssl_check_hostname: check that the broker's certificate names its host.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` or ``OAUTHBEARER``.
        sasl_username: SASL user (PLAIN and SCRAM).
        sasl_password: SASL password (PLAIN and SCRAM).
        sasl_oauth_token_provider: for OAUTHBEARER, an
            ``aiokafka.abc.AbstractTokenProvider`` instance, or in the environment
            the ``module:attribute`` path of one (or of a class taking no arguments).
        options: any other aiokafka argument, given to every client that takes it.
        commit_interval: seconds between watermark commits.
        max_in_flight_per_partition: most records of one partition inside the worker
            at once (default: ``window // partitions * 2``, at least 1), so one hot
            partition cannot take the whole window.
        max_uncommitted_per_partition: pause a partition whose fetched-but-uncommitted
            span reaches this (bounds replay and bookkeeping behind a stuck record).
        request_timeout_ms: broker request timeout.
        session_timeout_ms: consumer group session timeout.
        auto_offset_reset: where a group with no committed offset starts.
        offset_reset: what a worker does when its position lies outside the log (the
            log was truncated, the topic recreated): ``fail`` (the default) stops with
            the topic, partition and offsets named; ``earliest`` reads what the log
            holds; ``latest`` skips to its end. Either reset is logged and shown on
            ``/healthz``; an offset past the end of the log is never committed.
        fetch_max_wait_ms: longest the broker holds a fetch that has less than
            ``fetch_min_bytes`` (the floor of a stage's latency at light load).
        fetch_min_bytes: bytes a fetch waits for before it is answered.
        max_poll_records: most records one poll hands to the worker (the credit
            window caps it too).
        linger_ms: how long the producer holds a record to batch it with the next
            ones (under load batches fill while a request is in flight anyway).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
    )

    bootstrap_servers: str = Field(min_length=1)
    client_id: str = "streamflow"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_oauth_token_provider: Any = Field(default=None, repr=False)
    options: dict[str, Any] = Field(default_factory=dict)
    commit_interval: float = Field(default=1.0, gt=0)
    max_in_flight_per_partition: int | None = Field(default=None, ge=1)
    max_uncommitted_per_partition: int = Field(default=10_000, ge=1)
    request_timeout_ms: int = Field(default=30_000, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    offset_reset: Literal["earliest", "latest", "fail"] = "fail"
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    fetch_min_bytes: int = Field(default=1, ge=1)
    max_poll_records: int | None = Field(default=None, ge=1)
    linger_ms: int = Field(default=0, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments (CLI flags) first, then STREAMFLOW_KAFKA_*, then STREAMFLOW_BROKER.
        return init_settings, env_settings, _BrokerAlias(settings_cls)

    def __init__(self, **values: Any) -> None:
        # ``KafkaSettings(bootstrap=...)`` is how earlier releases spelled it; as an
        # argument it must beat the environment, so it is renamed before the merge.
        if "bootstrap" in values:
            values["bootstrap_servers"] = values.pop("bootstrap")
        super().__init__(**values)

    @field_validator("options")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in RESERVED_OPTIONS:
                instead = RESERVED_OPTIONS[key]
                hint = f"use the {instead} setting" if instead else "streamflow sets it"
                raise ValueError(f"option {key!r} cannot be passed through ({hint})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs a sasl_mechanism "
                f"(set {ENV_PREFIX}SASL_MECHANISM)"
            )
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism} needs a user and a password "
                f"(set {ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD)"
            )
        if self.sasl_mechanism == "OAUTHBEARER" and self.sasl_oauth_token_provider is None:
            raise ValueError(
                "sasl_mechanism OAUTHBEARER needs a token provider "
                f"(set {ENV_PREFIX}SASL_OAUTH_TOKEN_PROVIDER=module:attribute)"
            )
        if self.sasl_mechanism is not None and not sasl:
            raise ValueError(
                f"sasl_mechanism is set but security_protocol is {self.security_protocol} "
                f"(set {ENV_PREFIX}SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT)"
            )
        return self

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers (the name earlier releases used)."""
        return self.bootstrap_servers

    @property
    def uses_tls(self) -> bool:
        """True when connections are encrypted (``SSL`` or ``SASL_SSL``)."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def load(cls, **given: Any) -> KafkaSettings:
        """Build settings from arguments (CLI flags) over the environment.

        Arguments that are ``None`` are left to the environment and the defaults.

        Args:
            given: field values, e.g. ``bootstrap_servers`` from ``--broker``.

        Returns:
            The settings.

        Raises:
            ConfigError: no broker is named, or a value is invalid (one line,
                naming the environment variable to fix; secrets never appear).
        """
        chosen = {key: value for key, value in given.items() if value is not None}
        try:
            return cls(**chosen)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    @classmethod
    def from_env(cls, bootstrap: str | None = None) -> KafkaSettings:
        """Build settings from ``bootstrap`` (``--broker``) or else the environment.

        Args:
            bootstrap: the ``--broker`` value, if one was given.

        Returns:
            The settings.

        Raises:
            ConfigError: no broker is named, or an environment value is invalid.
        """
        return cls.load(bootstrap_servers=(bootstrap or "").strip() or None)


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing" and field == "bootstrap_servers":
            problems.append(
                f"no Kafka broker: pass --broker HOST:PORT or set {ENV_PREFIX}BOOTSTRAP_SERVERS "
                f"(or {BROKER_ENV}); start a local one with `streamflow broker`"
            )
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        if field:
            problems.append(f"Kafka setting {field} ({ENV_PREFIX}{field.upper()}): {message}")
        else:
            problems.append(f"Kafka settings: {message}")
    return "; ".join(problems)
