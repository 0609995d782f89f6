"""The accounting of one HTTP attempt at a model endpoint, shared by plain and streamed calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from operators.models._errors import RequestStatus, error_for_sdk, request_status
from operators.models._ledger import note_call
from operators.models._results import RequestInfo, Usage
from streamflow.errors import StreamflowError

if TYPE_CHECKING:
    from operators.models.openai import ModelClient

__all__ = ["Attempt"]

T = TypeVar("T")


class Attempt:
    """Status, tokens and cost of one attempt, reported to the client once when it ends.

    ::

        with Attempt(client, model) as attempt:
            raw = await attempt.call(sdk.chat.completions.with_raw_response.create(...))
            attempt.answered(raw.http_response.status_code)
            ...
            return data, attempt.usage(tokens_in, tokens_out)

    Tokens settled with :meth:`usage` are reported even when the answer then
    proves unusable (it was billed). An attempt that ends any other way after a
    2xx counts as ``error``; a cancelled one (the step's own timeout) as ``timeout``.
    """

    def __init__(self, client: ModelClient, model: str) -> None:
        client._check_open()
        self.client = client
        self.model = model
        self.url = client.url
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.status: RequestStatus = "error"
        self.http_status: int | None = None
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost: float | None = 0.0

    def answered(self, http_status: int) -> None:
        """The endpoint answered with ``http_status``."""
        self.http_status = http_status
        self.status = request_status(http_status)

    async def call(self, request: Awaitable[T], timeout: float | None = None) -> T:
        """Await an SDK request; what it raises becomes a streamflow error.

        The error is raised outside the handler, so it does not chain the SDK's
        exception: that holds the response, whose body may echo the request's
        headers (the key). The message keeps the scrubbed detail.
        """
        try:
            return await request
        except Exception as exc:
            error = self.failed(exc, timeout)
        raise error

    def failed(self, exc: Exception, timeout: float | None = None) -> Exception:
        """The streamflow error for what the SDK raised (see :meth:`call`)."""
        status_code = getattr(exc, "status_code", None)
        if isinstance(status_code, int):
            self.answered(status_code)
        elif type(exc).__name__ == "APITimeoutError":
            self.status = "timeout"
        limit = timeout if timeout is not None else self.client.endpoint.timeout_s
        mapped: StreamflowError | None = error_for_sdk(
            exc, model=self.model, url=self.url, timeout=limit, secrets=self.client.secrets
        )
        return mapped if mapped is not None else exc

    def usage(self, tokens_in: int, tokens_out: int) -> Usage:
        """Settle the tokens and cost of an answer (billed, whether or not it is usable)."""
        self.tokens_in, self.tokens_out = tokens_in, tokens_out
        self.cost = self.client.prices.cost(self.model, tokens_in, tokens_out)
        latency = time.perf_counter() - self.t0
        return Usage(self.model, tokens_in, tokens_out, latency, self.cost, self.started)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.status = "timeout"
        elif exc_type is not None and self.status == "ok":
            self.status = "error"  # a 2xx whose answer could not be used
        info = RequestInfo(
            model=self.model,
            endpoint=self.url,
            status=self.status,
            latency_s=time.perf_counter() - self.t0,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=self.cost,
            http_status=self.http_status,
            started_at=self.started,
            error=exc_type.__name__ if exc_type is not None else None,
        )
        # Accounted: the usage went back to the caller, whose result carries it.
        note_call(info, accounted=exc_type is None)
        self.client._report(info)
