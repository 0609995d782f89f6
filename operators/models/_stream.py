"""Streamed chat completions: server-sent events read as text deltas."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx

from operators.models._attempt import Attempt
from operators.models._http import (
    error_for_response,
)
from operators.models._results import Usage
from operators.models._wire import chat_tokens, deltas, sse_chunk
from streamflow.errors import RetriableError, Unavailable
from streamflow.events import dumps
from streamflow.ops import retry_call

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
        async def opened() -> tuple[AsyncGenerator[str, None], str | None]:
            deltas = self._attempt()
            try:
                return deltas, await anext(deltas)
            except StopAsyncIteration:
                return deltas, None
            except BaseException:
                await deltas.aclose()
                raise

        # Once text went out, a retry would repeat it: only the way to the first text
        # is retried.
        tried = await retry_call(
            opened, self._client._retry, retry_if=lambda exc: isinstance(exc, RetriableError)
        )
        deltas, first = tried.unwrap()
        async with contextlib.aclosing(deltas):
            if first is None:
                return
            yield first
            async for delta in deltas:
                yield delta

    async def _attempt(self) -> AsyncGenerator[str, None]:
        client, model = self._client, self._model
        with Attempt(client, model, "chat/completions") as attempt:
            try:
                async with client._http.stream(
                    "POST",
                    "chat/completions",
                    content=dumps(self._payload),
                    headers={"accept": "text/event-stream"},
                    timeout=client._timeout(self._timeout),
                ) as response:
                    attempt.answered(response.status_code)
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
                            attempt.tokens_in, attempt.tokens_out = chat_tokens(chunk)
                        texts, finish = deltas(chunk)
                        if finish is not None:
                            self.finish_reason = finish
                        for delta in texts:
                            self._parts.append(delta)
                            self._yielded = True
                            yield delta
                    if not done and self.finish_reason is None:
                        raise Unavailable(
                            f"model endpoint ended the stream early for {model!r} at {attempt.url}"
                        )
            except httpx.HTTPError as exc:
                raise attempt.unreachable(exc, self._timeout) from exc
            self.usage = attempt.usage(attempt.tokens_in, attempt.tokens_out)
