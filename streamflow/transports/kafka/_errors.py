"""Map aiokafka's exceptions onto streamflow's transport errors.

Every error aiokafka raises becomes exactly one of:

- ``TransportClosed``: the client was stopped on purpose; stop using it.
- ``TransportRetriable``: the broker or network hiccuped (timeouts, connection
  loss, leader moves, rebalances, a commit that lost its generation); a later
  call will likely work.
- ``TransportBroken``: retrying will not help (authorization, configuration,
  fencing, unsupported versions, records too large); restart or fix it.
"""

from __future__ import annotations

import asyncio

from aiokafka import errors as kafka_errors

from streamflow.errors import TransportBroken, TransportClosed, TransportError, TransportRetriable

__all__ = ["map_kafka_error"]

_CLOSED: tuple[type[BaseException], ...] = (
    kafka_errors.ConsumerStoppedError,
    kafka_errors.ProducerClosed,
)

# Group membership churn is handled by aiokafka rejoining; the next commit of the
# same (monotonic) watermark covers what this one missed, so it is worth retrying.
_GROUP_CHURN: tuple[type[BaseException], ...] = (
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
)

# aiokafka marks these non-retriable, but they say "not now", not "never".
_TRANSIENT: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaUnavailableError,
    kafka_errors.RequestTimedOutError,
)

_FATAL: tuple[type[BaseException], ...] = (
    kafka_errors.ProducerFenced,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.KafkaConfigurationError,
    kafka_errors.IncompatibleBrokerVersion,
    kafka_errors.UnrecognizedBrokerVersion,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.IllegalStateError,
)


def map_kafka_error(
    exc: BaseException, *, topic: str | None = None, partition: int | None = None
) -> TransportError:
    """Return the streamflow transport error for an exception raised by aiokafka.

    Args:
        exc: what aiokafka (or the socket underneath) raised.
        topic: the topic concerned, when known (kept as an attribute).
        partition: the partition concerned, when known.

    Returns:
        A ``TransportClosed``, ``TransportRetriable`` or ``TransportBroken``; an
        exception that already is a ``TransportError`` is returned unchanged.
    """
    if isinstance(exc, TransportError):
        return exc
    where = ""
    if topic is not None:
        where = f" on {topic}" if partition is None else f" on {topic}/{partition}"
    try:
        text = str(exc)
    except Exception:
        # Some aiokafka error bases format attributes only their subclasses define.
        text = ""
    message = f"{type(exc).__name__}{where}: {text}" if text else f"{type(exc).__name__}{where}"
    cls: type[TransportError]
    if isinstance(exc, _CLOSED):
        cls = TransportClosed
    elif isinstance(exc, _GROUP_CHURN + _TRANSIENT):
        cls = TransportRetriable
    elif isinstance(exc, _FATAL):
        cls = TransportBroken
    elif isinstance(exc, kafka_errors.KafkaError):
        cls = TransportRetriable if getattr(exc, "retriable", False) else TransportBroken
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError | OSError):
        cls = TransportRetriable
    else:
        cls = TransportBroken
    error = cls(message, topic=topic, partition=partition)
    error.__cause__ = exc
    return error
