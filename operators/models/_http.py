"""HTTP answers and httpx exceptions mapped onto the streamflow error tree.

::

    429                       -> RateLimited(retry_after from Retry-After)
    5xx, connection errors    -> Unavailable (retriable)
    httpx timeouts            -> StepTimeout (retriable)
    other 4xx                 -> StepFailed (not retriable)
    a bad URL or scheme       -> ConfigError

Every message that leaves this module has the API key scrubbed out, since an
endpoint or a proxy may echo request headers back in its error body.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from typing import Literal

import httpx

from streamflow.errors import (
    ConfigError,
    DecodeError,
    RateLimited,
    StepFailed,
    StepTimeout,
    StreamflowError,
    Unavailable,
)
from streamflow.events import loads

__all__ = [
    "RequestStatus",
    "error_for_exception",
    "error_for_response",
    "parse_retry_after",
    "redact",
    "request_status",
]

RequestStatus = Literal["ok", "429", "5xx", "4xx", "timeout", "error"]
"""How one HTTP attempt ended, as a bounded metrics label."""

_REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+")
_DETAIL_LIMIT = 300


def request_status(status_code: int) -> RequestStatus:
    """The metrics label of an HTTP status code."""
    if status_code < 400:
        return "ok"
    if status_code == 429:
        return "429"
    if status_code >= 500:
        return "5xx"
    return "4xx"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every secret and every bearer token replaced.

    Args:
        text: text that may hold a secret (an error body, a URL).
        secrets: the literal secrets to remove (empty strings are ignored).

    Returns:
        The text with ``[redacted]`` in place of each secret.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return _BEARER.sub(rf"\g<1>{_REDACTED}", text)


def redact_url(url: httpx.URL | str) -> str:
    """The URL without user info or query string (either may carry a credential)."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(username=None, password=None, query=None))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait as the server asked, from ``retry-after-ms`` or ``Retry-After``.

    Args:
        headers: response headers (case-insensitive lookups, as httpx.Headers gives).
        now: the current wall-clock time, for an HTTP-date value (default: now).

    Returns:
        Seconds (never negative), or None when the server said nothing usable.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(body: bytes, secrets: Iterable[str]) -> str:
    """The error message of an OpenAI-style error body, or the start of the body."""
    text: str
    try:
        parsed = loads(body)
    except DecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        text = error["message"]
    elif isinstance(error, str):
        text = error
    else:
        text = body.decode("utf-8", "replace")
    text = " ".join(redact(text, secrets).split())
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 3] + "..."
    # Redact again: cutting may not split a secret, but a bearer prefix may now end the text.
    return redact(text, secrets)


def error_for_response(
    response: httpx.Response, body: bytes, *, model: str, secrets: Iterable[str]
) -> StreamflowError:
    """The streamflow error for a non-2xx answer.

    Args:
        response: the answer (its body already read into ``body``).
        body: the answer's body bytes.
        model: the model the call was for.
        secrets: strings that must not appear in the message (the API key).

    Returns:
        RateLimited for 429, Unavailable for 5xx, StepFailed for other 4xx.
    """
    secrets = list(secrets)
    code = response.status_code
    message = (
        f"model endpoint answered {code} {response.reason_phrase} for model {model!r} "
        f"at {redact(redact_url(response.request.url), secrets)}: {_detail(body, secrets)}"
    )
    if code == 429:
        return RateLimited(message, retry_after=parse_retry_after(response.headers))
    if code >= 500:
        return Unavailable(message, retry_after=parse_retry_after(response.headers))
    return StepFailed(message)


def error_for_exception(
    exc: httpx.HTTPError, *, model: str, url: str, timeout: float | None
) -> StreamflowError:
    """The streamflow error for an httpx exception (raise it ``from exc``).

    Args:
        exc: what httpx raised.
        model: the model the call was for.
        url: the redacted URL of the call.
        timeout: the timeout in force, for the message.

    Returns:
        StepTimeout, Unavailable or ConfigError.
    """
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        limit = f" within {timeout:g}s" if timeout is not None else ""
        return StepTimeout(f"model endpoint did not answer{limit} ({kind}) for {model!r} at {url}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ConfigError(
            f"model endpoint URL {url} cannot be used ({kind}); set OPENAI_BASE_URL to an "
            "http(s) URL such as http://127.0.0.1:8000/v1"
        )
    return Unavailable(f"model endpoint unreachable ({kind}) for {model!r} at {url}")
