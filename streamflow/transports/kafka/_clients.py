"""The one place aiokafka clients are built: connection, TLS and SASL from KafkaSettings.

Every consumer, producer and admin client of streamflow comes from here, so
a setting (a CA file, a SASL mechanism, a pass-through option) reaches all of
them. Secret values are read only here, at the moment a client is built.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import re
import ssl
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import AuthenticationFailedError
from aiokafka.helpers import create_ssl_context

from streamflow.errors import ConfigError, TransportBroken, TransportError
from streamflow.transports.kafka._settings import ENV_PREFIX, KafkaSettings

__all__ = [
    "check_options",
    "connection_error",
    "make_admin",
    "make_consumer",
    "make_producer",
    "start_client",
]

log = logging.getLogger("streamflow.transports.kafka")


_CLIENTS: tuple[type[Any], ...] = (AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient)
_ACCEPTS: dict[type[Any], frozenset[str]] = {
    client: frozenset(inspect.signature(client.__init__).parameters) - {"self", "topics"}
    for client in _CLIENTS
}


def _accepts(client: type[Any]) -> frozenset[str]:
    return _ACCEPTS[client]


def check_options(settings: KafkaSettings) -> None:
    """Refuse pass-through options that no aiokafka client takes (a typo, most often).

    Raises:
        ConfigError: an option is unknown to every client.
    """
    known = frozenset().union(*(_accepts(client) for client in _CLIENTS))
    unknown = sorted(set(settings.options) - known)
    if unknown:
        raise ConfigError(
            f"Kafka option(s) {', '.join(unknown)} are not aiokafka arguments "
            f"(check {ENV_PREFIX}OPTIONS / --kafka-option)"
        )


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    password = settings.ssl_password.get_secret_value() if settings.ssl_password else None
    try:
        context = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
            password=password,
        )
    except (OSError, ssl.SSLError) as exc:
        # The message names the file, never the key's password.
        files = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("ssl_cafile", settings.ssl_cafile),
                ("ssl_certfile", settings.ssl_certfile),
                ("ssl_keyfile", settings.ssl_keyfile),
            )
            if value
        )
        reason = (
            getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        )
        raise ConfigError(f"cannot load the TLS files ({files}): {reason}") from None
    context.check_hostname = settings.ssl_check_hostname
    built: ssl.SSLContext = context
    return built


def _token_provider(settings: KafkaSettings) -> AbstractTokenProvider:
    provider = settings.sasl_oauth_token_provider
    if isinstance(provider, str):
        module_name, _, attribute = provider.partition(":")
        try:
            provider = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"cannot import the OAUTHBEARER token provider {provider!r} "
                f"({type(exc).__name__}); {ENV_PREFIX}SASL_OAUTH_TOKEN_PROVIDER "
                "takes module:attribute"
            ) from None
        if isinstance(provider, type):
            provider = provider()
    if not isinstance(provider, AbstractTokenProvider):
        raise ConfigError(
            "the OAUTHBEARER token provider must be an aiokafka.abc.AbstractTokenProvider "
            f"(got {type(provider).__name__})"
        )
    return provider


def _connection(settings: KafkaSettings) -> dict[str, Any]:
    """The arguments every client shares."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.uses_tls:
        kwargs["ssl_context"] = _ssl_context(settings)
    if settings.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = _token_provider(settings)
        else:
            assert settings.sasl_password is not None  # checked by the settings
            kwargs["sasl_plain_username"] = settings.sasl_username
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def _arguments(client: type[Any], settings: KafkaSettings, given: dict[str, Any]) -> dict[str, Any]:
    check_options(settings)
    accepted = _accepts(client)
    # streamflow's own choices for this client, then the user's options over them.
    kwargs = {**_connection(settings), **given}
    kwargs.update({k: v for k, v in settings.options.items() if k in accepted})
    return kwargs


def make_consumer(settings: KafkaSettings, **given: Any) -> AIOKafkaConsumer:
    """Build a consumer with the connection settings and ``given`` arguments.

    Args:
        settings: the connection settings.
        given: consumer arguments streamflow chooses (group, offsets, fetch sizes).

    Returns:
        The consumer, not started.

    Raises:
        ConfigError: TLS files cannot be loaded, or an option is unknown.
    """
    return AIOKafkaConsumer(**_arguments(AIOKafkaConsumer, settings, given))


def make_producer(settings: KafkaSettings, **given: Any) -> AIOKafkaProducer:
    """Build a producer with the connection settings and ``given`` arguments.

    Args:
        settings: the connection settings.
        given: producer arguments streamflow chooses (acks, batching).

    Returns:
        The producer, not started.

    Raises:
        ConfigError: TLS files cannot be loaded, or an option is unknown.
    """
    return AIOKafkaProducer(**_arguments(AIOKafkaProducer, settings, given))


def make_admin(settings: KafkaSettings, **given: Any) -> AIOKafkaAdminClient:
    """Build an admin client with the connection settings.

    Args:
        settings: the connection settings.
        given: further admin client arguments.

    Returns:
        The admin client, not started.

    Raises:
        ConfigError: TLS files cannot be loaded, or an option is unknown.
    """
    return AIOKafkaAdminClient(**_arguments(AIOKafkaAdminClient, settings, given))


@contextlib.contextmanager
def _bootstrap_errors() -> Iterator[list[str]]:
    """Collect (and keep off stderr) aiokafka's "Unable connect to" lines while a client starts.

    aiokafka reports a bootstrap that failed for any reason as "Unable to
    bootstrap" and only logs the reason (a certificate the CA does not sign,
    a refused connection); the reason belongs in streamflow's one-line error.
    """
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Unable connect to"):
            seen.append(record.getMessage())
            return False
        return True

    logger = logging.getLogger("aiokafka")
    logger.addFilter(keep)
    try:
        yield seen
    finally:
        logger.removeFilter(keep)


async def start_client(settings: KafkaSettings, client: Any, *, topic: str | None = None) -> None:
    """Start an aiokafka client; a failure becomes one streamflow error that says why.

    Args:
        settings: the connection settings the client was built with.
        client: a consumer, producer or admin client.
        topic: the topic concerned, if any (error context).

    Raises:
        TransportError: the client could not connect (TLS refused, login refused,
            no broker reachable); the client is stopped again.
    """
    with _bootstrap_errors() as seen:
        try:
            await client.start()
        except Exception as exc:
            stop = getattr(client, "stop", None) or client.close
            with contextlib.suppress(Exception):
                await stop()
            raise connection_error(settings, exc, seen, topic=topic) from exc
    for line in seen:
        # Another bootstrap server answered; still worth knowing that one did not.
        log.warning("%s", line)


def connection_error(
    settings: KafkaSettings, exc: BaseException, seen: list[str], *, topic: str | None = None
) -> TransportError:
    """Explain a failed start in one line: a refused certificate or login says so.

    Args:
        settings: the connection settings the client used.
        exc: what ``start()`` raised.
        seen: aiokafka's logged reasons for each bootstrap server it could not reach.
        topic: the topic concerned, if any.

    Returns:
        A ``TransportBroken`` naming the cause when one was found, else the mapped error.
    """
    from streamflow.transports.kafka._errors import map_kafka_error

    servers = settings.bootstrap_servers
    refused_login = TransportBroken(
        f"SASL {settings.sasl_mechanism} login as {settings.sasl_username!r} to {servers} "
        f"was refused (check {ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD)",
        topic=topic,
    )
    if settings.sasl_mechanism is not None and isinstance(exc, KeyError | AssertionError):
        # aiokafka's SCRAM client fails this way when the server's final message
        # is an error (unknown user or wrong password).
        return refused_login
    if isinstance(exc, AuthenticationFailedError) or any("Authentication" in s for s in seen):
        return refused_login
    tls = next((s for s in seen if "SSL" in s or "certificate" in s), None)
    if tls is not None:
        reason = _TLS_REASON.search(tls)
        return TransportBroken(
            f"TLS connection to {servers} failed: "
            f"{reason.group(1) if reason else tls} "
            f"(check {ENV_PREFIX}SSL_CAFILE and the broker's certificate)",
            topic=topic,
        )
    error = map_kafka_error(exc, topic=topic)
    if seen:
        error.message = f"cannot reach the Kafka brokers at {servers}: {seen[0]}"
        error.args = (error.message,)
    return error


_TLS_REASON = re.compile(r"\] (.*?)(?: \(_ssl\.c:\d+\))?$")
