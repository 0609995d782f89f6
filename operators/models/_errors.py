"""The OpenAI SDK's errors mapped onto the streamflow error tree, with secrets scrubbed.

::

    openai.RateLimitError (429)           -> RateLimited(retry_after from Retry-After)
    openai.APIStatusError 5xx             -> Unavailable (retriable)
    openai.APITimeoutError                -> StepTimeout (retriable)
    openai.APIConnectionError             -> Unavailable, or ConfigError when the
                                             request could not even be built (a bad
                                             key or URL)
    other openai.APIStatusError (4xx)     -> StepFailed (not retriable)

Every message that leaves this module has the credentials scrubbed out: the
API key, a user and password in the base URL (also as the Basic token they
become), and any bearer or basic token, since an endpoint or a proxy may echo
request headers back in its error body.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from streamflow.errors import (
    ConfigError,
    RateLimited,
    StepFailed,
    StepTimeout,
    StreamflowError,
    Unavailable,
)

__all__ = [
    "RequestStatus",
    "error_for_sdk",
    "parse_retry_after",
    "redact",
    "redact_url",
    "request_status",
    "scrub_http_logs",
    "url_secrets",
]

RequestStatus = Literal["ok", "429", "5xx", "4xx", "timeout", "error"]
"""How one HTTP attempt ended, as a bounded metrics label."""

_REDACTED = "[redacted]"
_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[redacted\])[^\s'\",}\]]+")
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
    """Return ``text`` with every secret and every bearer or basic token replaced.

    Args:
        text: text that may hold a secret (an error body, a URL).
        secrets: the literal secrets to remove (empty strings are ignored).

    Returns:
        The text with ``[redacted]`` in place of each secret.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return _TOKEN.sub(rf"\g<1>\g<2>{_REDACTED}", text)


def redact_url(url: object) -> str:
    """The URL without user info or query string (either may carry a credential)."""
    parts = urllib.parse.urlsplit(str(url))
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: user, password, both, and the Basic token they make.

    Args:
        url: a base URL such as ``http://user:key@host/v1``.

    Returns:
        The strings to scrub from anything shown (empty without user info).
    """
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    plain = [urllib.parse.unquote(user), urllib.parse.unquote(password)]
    pair = f"{plain[0]}:{plain[1]}"
    token = base64.b64encode(pair.encode()).decode()
    return [s for s in (userinfo, pair, token, password, plain[1]) if len(s) >= 3]


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait as the server asked, from ``retry-after-ms`` or ``Retry-After``.

    Args:
        headers: response headers (case-insensitive lookups, as httpx headers give).
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


def _detail(body: object, fallback: str, secrets: list[str]) -> str:
    """The error message of an OpenAI-style error body, or the SDK's own message."""
    text = fallback
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        text = error["message"]
    elif isinstance(error, str) and error:
        text = error
    text = " ".join(redact(text, secrets).split())
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 3] + "..."
    # Redact again: cutting may not split a secret, but a token prefix may now end the text.
    return redact(text, secrets)


def error_for_sdk(
    exc: Exception, *, model: str, url: str, timeout: float, secrets: list[str]
) -> StreamflowError | None:
    """The streamflow error for an exception the OpenAI SDK raised (raise it ``from exc``).

    Args:
        exc: what the SDK raised.
        model: the model the call was for.
        url: the redacted URL of the endpoint.
        timeout: the read timeout in force, for the message.
        secrets: strings that must not appear in the message (key, URL credentials).

    Returns:
        The error, or None when ``exc`` is not one of the SDK's.
    """
    import openai

    kind = type(exc).__name__
    if isinstance(exc, openai.APITimeoutError):
        return StepTimeout(
            f"model endpoint did not answer within {timeout:g}s ({kind}) for {model!r} at {url}"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        problem = _unsendable(cause)
        if problem is not None:
            return ConfigError(f"{problem} for model {model!r} at {url}")
        reason = f": {type(cause).__name__}" if cause is not None else ""
        return Unavailable(f"model endpoint unreachable ({kind}{reason}) for {model!r} at {url}")
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        response: Any = exc.response
        detail = _detail(exc.body, exc.message, secrets)
        message = f"model endpoint answered {code} for model {model!r} at {url}: {detail}"
        retry_after = parse_retry_after(response.headers)
        if code == 429:
            return RateLimited(message, retry_after=retry_after)
        if code >= 500:
            return Unavailable(message, retry_after=retry_after)
        return StepFailed(message)
    if isinstance(exc, openai.OpenAIError):
        return StepFailed(f"model call failed ({kind}) for {model!r} at {url}")
    return None


def _unsendable(cause: BaseException | None) -> str | None:
    """Why a request could not be sent at all, when the cause says so (None otherwise)."""
    if cause is None:
        return None
    text = str(cause).lower()
    if "header" in text and ("illegal" in text or "invalid" in text):
        return (
            "the API key cannot be sent in an HTTP header (it holds a newline, space or "
            "other character a header may not carry); check OPENAI_API_KEY"
        )
    if "protocol" in text and ("unsupported" in text or "missing" in text):
        return "the endpoint URL cannot be used; set OPENAI_BASE_URL to an http(s) URL"
    return None


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SCRUBBED_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "openai",
    "openai._base_client",
)


class _ScrubCredentials(logging.Filter):
    """Takes user info out of the URLs in log records (HTTP clients log request URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "@" in record.msg:
            record.msg = _USERINFO.sub(rf"\g<1>{_REDACTED}@", record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            if any("@" in str(arg) for arg in args):
                record.args = tuple(
                    _USERINFO.sub(rf"\g<1>{_REDACTED}@", str(arg)) if "@" in str(arg) else arg
                    for arg in args
                )
        return True


_FILTER = _ScrubCredentials()


def scrub_http_logs() -> None:
    """Keep credentials in base URLs out of the HTTP client's and the SDK's own log lines."""
    for name in _SCRUBBED_LOGGERS:
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
