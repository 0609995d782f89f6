"""Streamed chat completions: the SDK's server-sent events read as text deltas."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from operators.models._attempt import Attempt
from operators.models._results import Usage
from streamflow.errors import Unavailable

if TYPE_CHECKING:
    from operators.models.openai import ModelClient

__all__ = ["ChatStream"]


class ChatStream:
    """The text deltas of one streamed chat completion (one HTTP attempt).

    An async iterator and an async context manager. After the stream ends,
    ``content`` is the whole text, ``usage`` its usage (tokens are 0 when the
    server sent none) and ``finish_reason`` why the model stopped. Retrying is
    the caller's business: once text went out, a retry would repeat it.
    """

    def __init__(
        self, client: ModelClient, options: dict[str, Any], model: str, timeout: float | None
    ) -> None:
        self._client = client
        self._options = options
        self._model = model
        self._timeout = timeout
        self._parts: list[str] = []
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
        client, model = self._client, self._model
        with Attempt(client, model) as attempt:
            try:
                stream: Any = await client.sdk.chat.completions.create(stream=True, **self._options)
            except Exception as exc:
                raise attempt.failed(exc, self._timeout) from None
            attempt.answered(200)
            tokens = (0, 0)
            failure: Exception | None = None
            async with contextlib.aclosing(_chunks(stream)) as chunks:
                try:
                    async for chunk in chunks:
                        usage = getattr(chunk, "usage", None)
                        if usage is not None:
                            tokens = (usage.prompt_tokens or 0, usage.completion_tokens or 0)
                        for choice in chunk.choices or ():
                            delta = getattr(choice.delta, "content", None)
                            if choice.finish_reason:
                                self.finish_reason = str(choice.finish_reason)
                            if delta:
                                self._parts.append(delta)
                                yield delta
                except Exception as exc:
                    # Settle what the usage chunk said before failing (it may have come).
                    attempt.usage(*tokens)
                    failure = attempt.failed(exc, self._timeout)
            if failure is not None:
                raise failure
            self.usage = attempt.usage(*tokens)
            if self.finish_reason is None:
                raise Unavailable(
                    f"model endpoint ended the stream early for {model!r} at {attempt.url}"
                )


async def _chunks(stream: Any) -> AsyncGenerator[Any, None]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.close()
