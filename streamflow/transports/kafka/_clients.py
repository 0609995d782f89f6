"""The one place aiokafka clients are built: connection, TLS and SASL from KafkaSettings.

Every consumer, producer and admin client of streamflow comes from here, so
a setting (a CA file, a SASL mechanism, a pass-through option) reaches all of
them. Secret values are read only here, at the moment a client is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from streamflow.errors import ConfigError, TransportBroken, TransportError
from streamflow.transports.kafka._settings import ENV_PREFIX, KafkaSettings

__all__ = [
    "check_options",
    "connection_error",
    "make_admin",
    "make_consumer",
    "make_producer",
]

_PROBE_TIMEOUT_S = 5.0


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


async def connection_error(
    settings: KafkaSettings, exc: BaseException, *, topic: str | None = None
) -> TransportError:
    """Explain a failed start: a refused certificate or login says so, in one line.

    aiokafka reports a bootstrap that failed for any reason as "Unable to
    bootstrap"; the reason (a certificate the CA does not sign, a SASL
    login refused) is only logged. For TLS a single handshake with the same
    context finds it again.

    Args:
        settings: the connection settings the client used.
        exc: what ``start()`` raised.
        topic: the topic concerned, if any.

    Returns:
        A ``TransportBroken`` naming the cause when one was found, else the
        mapped error.
    """
    from streamflow.transports.kafka._errors import map_kafka_error

    servers = settings.bootstrap_servers
    if settings.sasl_mechanism is not None and isinstance(exc, KeyError | AssertionError):
        # aiokafka's SCRAM client fails this way when the server's final message
        # is an error (unknown user or wrong password).
        return TransportBroken(
            f"SASL {settings.sasl_mechanism} login as {settings.sasl_username!r} to {servers} "
            f"was refused (check {ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD)",
            topic=topic,
        )
    error = map_kafka_error(exc, topic=topic)
    if settings.uses_tls:
        reason = await _tls_refusal(settings)
        if reason is not None:
            return TransportBroken(
                f"TLS connection to {servers} failed: {reason} "
                f"(check {ENV_PREFIX}SSL_CAFILE and the broker's certificate)",
                topic=topic,
            )
    if "SaslAuthentication" in error.message or "Authentication" in type(exc).__name__:
        return TransportBroken(
            f"SASL {settings.sasl_mechanism} login as {settings.sasl_username!r} to {servers} "
            f"was refused (check {ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD)",
            topic=topic,
        )
    return error


async def _tls_refusal(settings: KafkaSettings) -> str | None:
    try:
        context = _ssl_context(settings)
    except ConfigError as exc:
        return exc.message
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host),
            _PROBE_TIMEOUT_S,
        )
    except ssl.SSLCertVerificationError as exc:
        return f"certificate verify failed: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except (OSError, TimeoutError, ValueError):
        return None
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return None
