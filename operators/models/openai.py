"""An async client for any OpenAI-compatible endpoint, on the official ``openai`` SDK.

:class:`ModelClient` wraps one ``openai.AsyncOpenAI`` (built from a
:class:`ModelEndpoint`, or one you pass: ``AsyncOpenAI``, ``AsyncAzureOpenAI``),
always with ``max_retries=0``: retries, the shared rate limiter and
``Retry-After`` stay with streamflow's policy. Every call returns its
:class:`Usage` (tokens, latency, cost from a
:class:`~operators.models.pricing.PriceTable`), which :meth:`Usage.to_record`
turns into a trace line. Every HTTP attempt is also reported to an optional
``on_request`` hook as a :class:`RequestInfo` (tokens included when the
answer was billed but unusable), so a runtime can count requests, tokens and
cost without this module knowing of Prometheus.

Errors are streamflow errors (see :mod:`operators.models._errors`): 429 ->
RateLimited, 5xx and connection errors -> Unavailable, timeouts ->
StepTimeout, other 4xx -> StepFailed, a key or URL that cannot be sent ->
ConfigError, structured output that does not validate ->
:class:`ModelOutputInvalid`.

The API key is a ``SecretStr``: it is not in reprs, and it is scrubbed from
every error message, as are credentials in the base URL, even when an
endpoint echoes request headers back. The SDK is imported when a client is made, so
importing :mod:`operators` does not load it; making a :class:`ModelClient` does.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from operators.models._attempt import Attempt
from operators.models._errors import RequestStatus, redact_url, scrub_http_logs, url_secrets
from operators.models._results import (
    ChatResult,
    ClientStatistics,
    EmbedResult,
    ModelOutputInvalid,
    RequestInfo,
    Usage,
    usage_record,
)
from operators.models._stream import ChatStream
from operators.models._structured import (
    Message,
    StructuredMode,
    chat_messages,
    parse_structured,
    with_schema_hint,
)
from operators.models.pricing import PriceTable, warn_if_unpriced
from streamflow.errors import ConfigError, StepFailed, TransportClosed
from streamflow.events import loads

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = [
    "DEFAULT_BASE_URL",
    "ChatResult",
    "ChatStream",
    "ClientStatistics",
    "EmbedResult",
    "Message",
    "ModelClient",
    "ModelEndpoint",
    "ModelOutputInvalid",
    "RequestInfo",
    "RequestStatus",
    "Usage",
    "usage_record",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

M = TypeVar("M", bound=BaseModel)

# What an HTTP header value may hold: visible ASCII, no whitespace inside a key.
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")
# A server that cannot take a JSON schema says so in a 400 naming the field.
_NO_SCHEMA_SUPPORT = re.compile(r"(?i)response_format|json_schema")


class ModelEndpoint(BaseModel):
    """Where the model server is and how to talk to it.

    Attributes:
        base_url: the API root, ending in ``/v1`` for most servers.
        api_key: the bearer token (a SecretStr: never shown); None for local servers.
        timeout_s: seconds allowed for each read of an answer (and the whole pool wait).
        connect_timeout_s: seconds allowed to connect.
        max_connections: the size of the connection pool.
        stream_usage: ask streamed answers for usage (``stream_options.include_usage``).
        structured_output: ``json_schema`` (the SDK's parse with the pydantic model)
            or ``json_object`` (JSON mode with the schema in the prompt, for servers
            without JSON-schema support; also chosen by itself when a server refuses
            a schema).
    """

    model_config = ConfigDict(frozen=True)

    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    stream_usage: bool = True
    structured_output: StructuredMode = "json_schema"

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _KEY_CHARACTERS.fullmatch(value.get_secret_value()):
            raise ValueError(
                "the API key holds whitespace (a trailing newline?) or characters an HTTP "
                "header cannot carry; strip it"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ModelEndpoint:
        """Read ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` from the environment.

        Args:
            environ: the variables to read (default: ``os.environ``).
            **overrides: fields set explicitly (``timeout_s=5``, ...).

        Returns:
            The endpoint; the base URL defaults to OpenAI's.

        Raises:
            ConfigError: when a value is not usable; the message names the variable.
        """
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {"base_url": env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL}
        key = env.get("OPENAI_API_KEY")
        if key:
            fields["api_key"] = SecretStr(key)
        fields.update(overrides)
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            names = "OPENAI_API_KEY" if "api_key" in problems else "OPENAI_BASE_URL"
            raise ConfigError(
                f"model endpoint settings are invalid ({problems}); check {names} "
                "(a base URL looks like http://127.0.0.1:8000/v1) and the arguments given"
            ) from None

    def __repr__(self) -> str:
        key = "None" if self.api_key is None else "SecretStr('**********')"
        return (
            f"ModelEndpoint(base_url={redact_url(self.base_url)!r}, api_key={key}, "
            f"timeout_s={self.timeout_s:g})"
        )

    __str__ = __repr__


@dataclass
class _Totals:
    requests: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    unpriced: set[str] = field(default_factory=set)


class ModelClient:
    """Calls an OpenAI-compatible endpoint through the OpenAI SDK: chat, streamed chat, embeddings.

    Use as ``async with ModelClient(ModelEndpoint.from_env()) as client``; the
    SDK client (and its connection pool) is shared by every call and closed on
    exit, unless it was passed in, which leaves closing it to its owner.
    """

    def __init__(
        self,
        endpoint: ModelEndpoint | None = None,
        *,
        openai_client: AsyncOpenAI | None = None,
        prices: PriceTable | None = None,
        on_request: Callable[[RequestInfo], None] | None = None,
    ) -> None:
        """Create a client and its SDK client (close it with ``aclose``).

        Args:
            endpoint: where to call (default: :meth:`ModelEndpoint.from_env`, or what
                ``openai_client`` says).
            openai_client: an ``AsyncOpenAI`` or ``AsyncAzureOpenAI`` you configured;
                it is used with ``max_retries=0``.
            prices: the price table for costs (default: :meth:`PriceTable.from_env`, the
                shipped list prices with the user's from the environment).
            on_request: called after every HTTP attempt with its :class:`RequestInfo`.
        """
        if endpoint is None:
            endpoint = (
                ModelEndpoint(base_url=str(openai_client.base_url))
                if openai_client is not None
                else ModelEndpoint.from_env()
            )
        self.endpoint = endpoint
        self.prices = prices if prices is not None else PriceTable.from_env()
        self._on_request = on_request
        self._given = openai_client
        key = self.endpoint.api_key
        given_key = getattr(openai_client, "api_key", None)
        self.secrets: list[str] = [
            s
            for s in (
                key.get_secret_value() if key is not None else None,
                given_key if isinstance(given_key, str) else None,
                *url_secrets(self.endpoint.base_url),
            )
            if s
        ]
        self.url = redact_url(self.endpoint.base_url)
        self.structured: StructuredMode = self.endpoint.structured_output
        self._totals = _Totals()
        self._closed = False
        # Made now, not on the first call: importing the SDK takes a while, and
        # calls admitted by a rate limiter must not bunch up behind it.
        scrub_http_logs()
        self._sdk_client: AsyncOpenAI = self._make_sdk()
        _warm_up(self._sdk_client)

    def __repr__(self) -> str:
        return f"ModelClient({self.endpoint!r})"

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the SDK client this client made; later calls raise TransportClosed."""
        self._closed = True
        if self._given is None:
            await self._sdk_client.close()

    def statistics(self) -> ClientStatistics:
        """Totals over every HTTP attempt so far."""
        t = self._totals
        return ClientStatistics(
            dict(t.requests), t.tokens_in, t.tokens_out, t.cost_usd, frozenset(t.unpriced)
        )

    def check_price(self, model: str) -> bool:
        """Warn (once) at start when ``model`` has no price; its cost will read unknown.

        Returns:
            True when the model has a price.
        """
        return warn_if_unpriced(self.prices, model)

    @property
    def sdk(self) -> AsyncOpenAI:
        """The ``AsyncOpenAI`` client the calls go through (``max_retries=0``)."""
        return self._sdk_client

    def _make_sdk(self) -> AsyncOpenAI:
        try:
            import openai
        except ImportError:
            raise ConfigError(
                "the model client needs the OpenAI SDK: pip install 'streamflow-ai[models]'"
            ) from None
        if self._given is not None:
            return self._given.with_options(max_retries=0)
        import httpx2  # the SDK's HTTP client, installed with it

        key = self.endpoint.api_key
        pool = self.endpoint.max_connections
        return openai.AsyncOpenAI(
            # Local servers take no key; the SDK insists on one, so send a placeholder.
            api_key=key.get_secret_value() if key is not None else "unused",
            base_url=self.endpoint.base_url,
            timeout=openai.Timeout(
                self.endpoint.timeout_s, connect=self.endpoint.connect_timeout_s
            ),
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
            ),
        )

    # -- calls -----------------------------------------------------------------

    @overload
    async def chat(
        self,
        messages: str | Sequence[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_model: None = None,
        timeout: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult[None]: ...

    @overload
    async def chat(
        self,
        messages: str | Sequence[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_model: type[M],
        timeout: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult[M]: ...

    async def chat(
        self,
        messages: str | Sequence[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_model: type[M] | None = None,
        timeout: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult[M] | ChatResult[None]:
        """Ask for one chat completion (one HTTP attempt).

        Args:
            messages: the conversation, or one user message as a string.
            model: the model name the endpoint knows.
            temperature: sampling temperature (the server's default when None).
            max_tokens: the cap on completion tokens.
            response_model: ask for JSON shaped as this pydantic model (the SDK's
                ``parse``, or JSON mode with the schema in the prompt when the
                endpoint's ``structured_output`` is ``json_object`` or the server
                refuses a JSON schema) and validate the answer.
            timeout: seconds per read for this call (default: the endpoint's).
            extra: other request fields (``seed``, ``stop``, ``top_p`` ...).

        Returns:
            The content, the parsed model (or None), the usage and the finish reason.

        Raises:
            ModelOutputInvalid: the answer does not validate against ``response_model``
                (its ``usage`` says what the answer cost).
            RateLimited, Unavailable, StepTimeout: retriable failures.
            StepFailed: the endpoint refused the request (4xx) or answered nonsense.
            ConfigError: the key or URL cannot be used.
        """
        chat = chat_messages(messages, model)
        options: dict[str, Any] = dict(extra or {})
        if temperature is not None:
            options["temperature"] = temperature
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if timeout is not None:
            options["timeout"] = timeout
        if response_model is not None and self.structured == "json_schema":
            try:
                return await self._chat(chat, model, options, response_model, schema=True)
            except StepFailed as exc:
                if "400" not in str(exc) or not _NO_SCHEMA_SUPPORT.search(str(exc)):
                    raise
                logger.warning(
                    "model endpoint %s refused a JSON schema for %r; using JSON mode",
                    self.url,
                    model,
                )
                self.structured = "json_object"
        return await self._chat(chat, model, options, response_model, schema=False)

    async def _chat(
        self,
        chat: list[dict[str, Any]],
        model: str,
        options: dict[str, Any],
        response_model: type[M] | None,
        *,
        schema: bool,
    ) -> ChatResult[Any]:
        completions: Any = self.sdk.chat.completions.with_raw_response
        with Attempt(self, model) as attempt:
            if response_model is not None and schema:
                request = completions.parse(
                    model=model, messages=chat, response_format=response_model, **options
                )
            elif response_model is not None:
                request = completions.create(
                    model=model,
                    messages=with_schema_hint(chat, response_model),
                    response_format={"type": "json_object"},
                    **options,
                )
            else:
                request = completions.create(model=model, messages=chat, **options)
            raw: Any = await attempt.call(request, options.get("timeout"))
            attempt.answered(raw.http_response.status_code)
            data = _json_body(raw.http_response.content, "chat completion", model)
            usage = attempt.usage(*_chat_tokens(data))
            try:
                choice = data["choices"][0]
                content = choice["message"].get("content") or ""
                finish_reason = choice.get("finish_reason")
            except (KeyError, IndexError, TypeError, AttributeError):
                raise _unexpected("chat completion", model) from None
            if not isinstance(content, str):
                raise _unexpected("chat completion", model)
            if response_model is None:
                return ChatResult(content, None, usage, finish_reason)
            try:
                parsed = _sdk_parsed(raw, response_model) if schema else None
                if parsed is None:
                    parsed = parse_structured(content, response_model, model)
            except ModelOutputInvalid as exc:
                exc.usage = usage  # billed all the same
                raise
            return ChatResult(content, parsed, usage, finish_reason)

    def chat_stream(
        self,
        messages: str | Sequence[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatStream:
        """Stream a chat completion as text deltas (one HTTP attempt).

        Use ``async with client.chat_stream(...) as stream: async for delta in stream``
        so the connection is released even when you stop early; ``stream.usage``
        holds the usage once the stream has ended.

        Args:
            messages: the conversation, or one user message as a string.
            model: the model name the endpoint knows.
            temperature: sampling temperature.
            max_tokens: the cap on completion tokens.
            timeout: seconds allowed between chunks (default: the endpoint's).
            extra: other request fields.

        Returns:
            An async iterator of text deltas (errors as for :meth:`chat`).
        """
        options: dict[str, Any] = dict(extra or {})
        options["model"] = model
        options["messages"] = chat_messages(messages, model)
        if temperature is not None:
            options["temperature"] = temperature
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if timeout is not None:
            options["timeout"] = timeout
        if self.endpoint.stream_usage:
            options["stream_options"] = {"include_usage": True}
        return ChatStream(self, options, model, timeout)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        dimensions: int | None = None,
        timeout: float | None = None,
    ) -> EmbedResult:
        """Embed ``texts`` in one request.

        Args:
            texts: the texts, in order (an empty list makes no request).
            model: the embedding model name.
            dimensions: ask for shorter vectors, where the model supports it.
            timeout: seconds per read for this call.

        Returns:
            One vector per text, in the order given, and the call's usage.

        Raises:
            RateLimited, Unavailable, StepTimeout, StepFailed: as for :meth:`chat`.
        """
        if isinstance(texts, str):
            raise ConfigError("embed takes a list of texts; wrap a single text in a list")
        if not texts:
            return EmbedResult([], Usage(model=model, started_at=time.time(), requests=0))
        options: dict[str, Any] = {"encoding_format": "float"}
        if dimensions is not None:
            options["dimensions"] = dimensions
        if timeout is not None:
            options["timeout"] = timeout
        with Attempt(self, model) as attempt:
            raw: Any = await attempt.call(
                self.sdk.embeddings.with_raw_response.create(
                    model=model, input=list(texts), **options
                ),
                timeout,
            )
            attempt.answered(raw.http_response.status_code)
            data = _json_body(raw.http_response.content, "embedding list", model)
            usage = attempt.usage(*_embed_tokens(data))
            try:
                rows = sorted(data["data"], key=lambda row: row["index"])
                vectors = [[float(x) for x in row["embedding"]] for row in rows]
            except (KeyError, TypeError, ValueError):
                raise _unexpected("embedding list", model) from None
            if len(vectors) != len(texts):
                raise _unexpected(f"list of {len(texts)} embeddings", model)
            return EmbedResult(vectors, usage)

    async def list_models(self, *, timeout: float | None = None) -> list[str]:
        """The model names the endpoint serves (``GET /models``)."""
        with Attempt(self, "*") as attempt:
            page = await attempt.call(
                self.sdk.models.list(
                    timeout=timeout if timeout is not None else self.endpoint.timeout_s
                ),
                timeout,
            )
            attempt.answered(200)
            return [str(row.id) for row in page.data]

    # -- plumbing --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the model client is closed; open a new one")

    def _report(self, info: RequestInfo) -> None:
        totals = self._totals
        totals.requests[info.status] = totals.requests.get(info.status, 0) + 1
        totals.tokens_in += info.tokens_in
        totals.tokens_out += info.tokens_out
        if info.cost_usd is None:
            totals.unpriced.add(info.model)
        else:
            totals.cost_usd += info.cost_usd
        if self._on_request is not None:
            try:
                self._on_request(info)
            except Exception:
                # A broken metrics hook must not fail the model call it observes.
                logger.exception("on_request hook failed")


def _warm_up(sdk: AsyncOpenAI) -> None:
    """Load what the SDK otherwise loads on its first request (resources, platform headers)."""
    for resource in (sdk.chat.completions, sdk.embeddings, sdk.models):
        getattr(resource, "with_raw_response", None)
    _ = sdk.default_headers


def _sdk_parsed(raw: Any, response_model: type[M]) -> M | None:
    """The SDK's own parse of a structured answer, or None when it could not make one."""
    try:
        parsed = raw.parse().choices[0].message.parsed
    except Exception:
        # Not valid (or fenced in Markdown): parse_structured explains or recovers.
        return None
    return parsed if isinstance(parsed, response_model) else None


def _json_body(body: bytes, what: str, model: str) -> dict[str, Any]:
    try:
        parsed = loads(body)
    except Exception:
        raise _unexpected(what, model) from None
    if not isinstance(parsed, dict):
        raise _unexpected(what, model)
    return parsed


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _chat_tokens(data: Mapping[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def _embed_tokens(data: Mapping[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _count(usage.get("prompt_tokens", usage.get("total_tokens"))), 0


def _unexpected(what: str, model: str) -> StepFailed:
    return StepFailed(f"model endpoint answered 200 without a valid {what} for {model!r}")
