"""Streamed chat completions: server-sent events read as text deltas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from operators.models._http import (
    RequestStatus,
    error_for_exception,
    error_for_response,
    redact_url,
    request_status,
)
from operators.models._results import RequestInfo, Usage
from operators.models._wire import chat_tokens, deltas, sse_chunk
from streamflow.errors import RetriableError, StreamflowError, Unavailable
from streamflow.events import dumps

if TYPE_CHECKING:
    from operators.models.openai import ModelClient

__all__ = ["ChatStream"]


class ChatStream:
    """The text deltas of one streamed chat completion.

    An async iterator and an async context manager. After the stream ends,
    ``content`` is the whole text, ``usage`` its usage (tokens are 0 when the
    server sent none) and ``finish_reason`` why the model stopped.
    """

    def __init__(
        self, client: ModelClient, payload: dict[str, Any], model: str, timeout: float | None
    ) -> None:
        self._client = client
        self._payload = payload
        self._model = model
        self._timeout = timeout
        self._parts: list[str] = []
        self._yielded = False
        self._gen = self._run()
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    @property
    def content(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        return await self._gen.__anext__()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the connection."""
        await self._gen.aclose()

    async def text(self) -> str:
        """Read the stream to its end and return the whole text."""
        async for _ in self:
            pass
        return self.content

    async def _run(self) -> AsyncGenerator[str, None]:
        retry = self._client._retry
        attempt = 0
        while True:
            attempt += 1
            try:
                async with contextlib.aclosing(self._attempt()) as deltas:
                    async for delta in deltas:
                        yield delta
                return
            except RetriableError as exc:
                # Once text went out, a retry would repeat it: only retry before.
                if self._yielded or retry is None or not retry.should_retry(exc, attempt):
                    raise
                await asyncio.sleep(retry.delay(attempt, exc.retry_after))

    async def _attempt(self) -> AsyncGenerator[str, None]:
        client, model = self._client, self._model
        client._check_open()
        http = client._http
        url = redact_url(http.base_url.join("chat/completions"))
        started, t0 = time.time(), time.perf_counter()
        status: RequestStatus = "error"
        http_status: int | None = None
        tokens_in = tokens_out = 0
        cost = 0.0
        try:
            try:
                async with http.stream(
                    "POST",
                    "chat/completions",
                    content=dumps(self._payload),
                    headers={"accept": "text/event-stream"},
                    timeout=client._timeout(self._timeout),
                ) as response:
                    http_status = response.status_code
                    status = request_status(http_status)
                    if not response.is_success:
                        body = await response.aread()
                        raise error_for_response(
                            response, body, model=model, secrets=client._secrets
                        )
                    done = False
                    async for line in response.aiter_lines():
                        chunk = sse_chunk(line, model, client._secrets)
                        if chunk is None:
                            continue
                        if isinstance(chunk, str):  # "[DONE]"
                            done = True
                            break
                        usage = chunk.get("usage")
                        if isinstance(usage, dict):
                            tokens_in, tokens_out = chat_tokens(chunk)
                        texts, finish = deltas(chunk)
                        if finish is not None:
                            self.finish_reason = finish
                        for delta in texts:
                            self._parts.append(delta)
                            self._yielded = True
                            yield delta
                    if not done and self.finish_reason is None:
                        raise Unavailable(
                            f"model endpoint ended the stream early for {model!r} at {url}"
                        )
            except httpx.HTTPError as exc:
                status = "timeout" if isinstance(exc, httpx.TimeoutException) else "error"
                limit = self._timeout if self._timeout is not None else client.endpoint.timeout_s
                raise error_for_exception(exc, model=model, url=url, timeout=limit) from exc
            except StreamflowError:
                if status == "ok":
                    status = "error"
                raise
            cost = client.prices.cost(model, tokens_in, tokens_out)
            latency = time.perf_counter() - t0
            self.usage = Usage(model, tokens_in, tokens_out, latency, cost, started)
        except asyncio.CancelledError:
            status = "timeout"
            raise
        finally:
            client._report(
                RequestInfo(
                    model=model,
                    endpoint=url,
                    status=status,
                    latency_s=time.perf_counter() - t0,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=cost,
                    http_status=http_status,
                )
            )
