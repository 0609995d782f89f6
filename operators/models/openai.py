"""An async client for any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp).

One pooled ``httpx.AsyncClient`` per :class:`ModelClient`, opened and closed
with ``async with``. Every call returns its :class:`Usage` (tokens, latency,
cost from a :class:`~operators.models.pricing.PriceTable`), which
:meth:`Usage.to_record` turns into a trace line. Every HTTP attempt is also
reported to an optional ``on_request`` hook as a :class:`RequestInfo`, so a
runtime can count requests, tokens and cost without this module knowing of
Prometheus.

Errors are streamflow errors (see :mod:`operators.models._http`): 429 ->
RateLimited, 5xx and connection errors -> Unavailable, timeouts ->
StepTimeout, other 4xx -> StepFailed, unparseable structured output ->
:class:`ModelOutputInvalid`. The client does not retry unless given a
``retry`` policy; ``map_async(retry=...)`` usually does that job.

The API key is a ``SecretStr``: it is not in reprs, and it is scrubbed from
every error message, even when an endpoint echoes request headers back.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from operators.models._attempt import Attempt
from operators.models._http import (
    RequestStatus,
    error_for_exception,
    error_for_response,
    redact_url,
)
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
from operators.models._wire import (
    Message,
    chat_payload,
    chat_tokens,
    embed_tokens,
    json_object,
    parse_structured,
    unexpected,
)
from operators.models.pricing import PriceTable
from streamflow.errors import ConfigError, DecodeError, RetriableError, TransportClosed
from streamflow.events import dumps
from streamflow.ops import RetryPolicy, retry_call

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


class ModelEndpoint(BaseModel):
    """Where the model server is and how to talk to it.

    Attributes:
        base_url: the API root, ending in ``/v1`` for most servers.
        api_key: the bearer token (a SecretStr: never shown); None for local servers.
        timeout_s: seconds allowed for each read of an answer (and the whole pool wait).
        connect_timeout_s: seconds allowed to connect.
        max_connections: the size of the connection pool.
        stream_usage: ask streamed answers for usage (``stream_options.include_usage``).
    """

    model_config = ConfigDict(frozen=True)

    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    stream_usage: bool = True

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
            raise ConfigError(
                f"model endpoint settings are invalid ({problems}); check OPENAI_BASE_URL "
                "(for example http://127.0.0.1:8000/v1) and the arguments given"
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


class ModelClient:
    """Calls an OpenAI-compatible endpoint: chat, streamed chat, embeddings.

    Use as ``async with ModelClient(ModelEndpoint.from_env()) as client``; the
    connection pool is shared by every call and closed on exit.
    """

    def __init__(
        self,
        endpoint: ModelEndpoint | None = None,
        *,
        prices: PriceTable | None = None,
        on_request: Callable[[RequestInfo], None] | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Create a client (its pool opens lazily; close it with ``aclose``).

        Args:
            endpoint: where to call (default: :meth:`ModelEndpoint.from_env`).
            prices: the price table for costs (default: :meth:`PriceTable.defaults`).
            on_request: called after every HTTP attempt with its :class:`RequestInfo`.
            retry: retry retriable failures inside the client (default: no retry).
            transport: an httpx transport to use instead of the network.
        """
        self.endpoint = endpoint if endpoint is not None else ModelEndpoint.from_env()
        self.prices = prices if prices is not None else PriceTable.defaults()
        self._on_request = on_request
        self._retry = retry
        headers = {"accept": "application/json", "content-type": "application/json"}
        key = self.endpoint.api_key
        self._secrets = [key.get_secret_value()] if key is not None else []
        if key is not None:
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
        limits = httpx.Limits(
            max_connections=self.endpoint.max_connections,
            max_keepalive_connections=self.endpoint.max_connections,
        )
        self._http = httpx.AsyncClient(
            base_url=self.endpoint.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.endpoint.timeout_s, connect=self.endpoint.connect_timeout_s),
            limits=limits,
            transport=transport,
        )
        self._totals = _Totals()
        self._closed = False

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
        """Close the connection pool; later calls raise TransportClosed."""
        self._closed = True
        await self._http.aclose()

    def statistics(self) -> ClientStatistics:
        """Totals over every HTTP attempt so far."""
        t = self._totals
        return ClientStatistics(dict(t.requests), t.tokens_in, t.tokens_out, t.cost_usd)

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
        """Ask for one chat completion.

        Args:
            messages: the conversation, or one user message as a string.
            model: the model name the endpoint knows.
            temperature: sampling temperature (the server's default when None).
            max_tokens: the cap on completion tokens.
            response_model: ask for a JSON object (``response_format``), with the
                model's JSON schema in a system message, and validate the answer.
            timeout: seconds per read for this call (default: the endpoint's).
            extra: other request fields (``seed``, ``stop``, ``top_p`` ...).

        Returns:
            The content, the parsed model (or None), the usage and the finish reason.

        Raises:
            ModelOutputInvalid: the answer does not validate against ``response_model``.
            RateLimited, Unavailable, StepTimeout: retriable failures.
            StepFailed: the endpoint refused the request (4xx) or answered nonsense.
        """
        payload = chat_payload(messages, model, temperature, max_tokens, response_model, extra)
        data, usage = await self._call("chat/completions", payload, model, timeout, chat_tokens)
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            finish_reason = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise unexpected("chat completion", model) from None
        if not isinstance(content, str):
            raise unexpected("chat completion", model)
        if response_model is None:
            return ChatResult(content, None, usage, finish_reason)
        parsed = parse_structured(content, response_model, model)
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
        """Stream a chat completion as text deltas.

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
        payload = chat_payload(messages, model, temperature, max_tokens, None, extra)
        payload["stream"] = True
        if self.endpoint.stream_usage:
            payload["stream_options"] = {"include_usage": True}
        return ChatStream(self, payload, model, timeout)

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
        payload: dict[str, Any] = {"model": model, "input": list(texts)}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        data, usage = await self._call("embeddings", payload, model, timeout, embed_tokens)
        try:
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise unexpected("embedding list", model) from None
        if len(vectors) != len(texts):
            raise unexpected(f"list of {len(texts)} embeddings", model)
        return EmbedResult(vectors, usage)

    async def list_models(self, *, timeout: float | None = None) -> list[str]:
        """The model names the endpoint serves (``GET /models``)."""
        self._check_open()
        url = redact_url(self._http.base_url.join("models"))
        try:
            response = await self._http.get("models", timeout=self._timeout(timeout))
        except httpx.HTTPError as exc:
            raise error_for_exception(exc, model="*", url=url, timeout=timeout) from exc
        if not response.is_success:
            raise error_for_response(response, response.content, model="*", secrets=self._secrets)
        try:
            return [str(row["id"]) for row in json_object(response.content)["data"]]
        except (KeyError, TypeError, DecodeError):
            raise unexpected("model list", "*") from None

    # -- plumbing --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the model client is closed; open a new one")

    def _timeout(self, timeout: float | None) -> httpx.Timeout:
        # Always explicit: httpx reads timeout=None as "no timeout at all".
        read = self.endpoint.timeout_s if timeout is None else timeout
        return httpx.Timeout(read, connect=min(read, self.endpoint.connect_timeout_s))

    def _report(self, info: RequestInfo) -> None:
        totals = self._totals
        totals.requests[info.status] = totals.requests.get(info.status, 0) + 1
        totals.tokens_in += info.tokens_in
        totals.tokens_out += info.tokens_out
        totals.cost_usd += info.cost_usd
        if self._on_request is not None:
            try:
                self._on_request(info)
            except Exception:
                # A broken metrics hook must not fail the model call it observes.
                logger.exception("on_request hook failed")

    async def _call(
        self,
        path: str,
        payload: dict[str, Any],
        model: str,
        timeout: float | None,
        tokens: Callable[[dict[str, Any]], tuple[int, int]],
    ) -> tuple[dict[str, Any], Usage]:
        tried = await retry_call(
            functools.partial(self._attempt, path, payload, model, timeout, tokens),
            self._retry,
            retry_if=lambda exc: isinstance(exc, RetriableError),
        )
        return tried.unwrap()

    async def _attempt(
        self,
        path: str,
        payload: dict[str, Any],
        model: str,
        timeout: float | None,
        tokens: Callable[[dict[str, Any]], tuple[int, int]],
    ) -> tuple[dict[str, Any], Usage]:
        with Attempt(self, model, path) as attempt:
            try:
                response = await self._http.post(
                    path, content=dumps(payload), timeout=self._timeout(timeout)
                )
            except httpx.HTTPError as exc:
                raise attempt.unreachable(exc, timeout) from exc
            attempt.answered(response.status_code)
            if not response.is_success:
                raise error_for_response(
                    response, response.content, model=model, secrets=self._secrets
                )
            try:
                data = json_object(response.content)
            except DecodeError:
                raise unexpected("JSON object", model) from None
            return data, attempt.usage(*tokens(data))
