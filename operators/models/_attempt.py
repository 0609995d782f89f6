"""The accounting of one HTTP attempt at a model endpoint, shared by plain and streamed calls."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from operators.models._http import (
    RequestStatus,
    error_for_exception,
    redact_url,
    request_status,
)
from operators.models._results import RequestInfo, Usage
from streamflow.errors import StreamflowError

if TYPE_CHECKING:
    from operators.models.openai import ModelClient

__all__ = ["Attempt"]


class Attempt:
    """Status, tokens and cost of one attempt, reported to the client once when it ends.

    ::

        with Attempt(client, model, "chat/completions") as attempt:
            try:
                response = await http.post(...)
            except httpx.HTTPError as exc:
                raise attempt.unreachable(exc, timeout) from exc
            attempt.answered(response.status_code)
            ...
            return data, attempt.usage(tokens_in, tokens_out)

    An attempt that ends any other way, a 2xx whose answer then proves unusable
    included, counts as ``error``; a cancelled one (the step's own timeout) as
    ``timeout``.
    """

    def __init__(self, client: ModelClient, model: str, path: str) -> None:
        client._check_open()
        self.client = client
        self.model = model
        self.url = redact_url(client._http.base_url.join(path))
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.status: RequestStatus = "error"
        self.http_status: int | None = None
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost = 0.0

    def answered(self, http_status: int) -> None:
        """The endpoint answered with ``http_status``."""
        self.http_status = http_status
        self.status = request_status(http_status)

    def unreachable(self, exc: httpx.HTTPError, timeout: float | None) -> StreamflowError:
        """The streamflow error for a transport failure (raise it ``from exc``)."""
        self.status = "timeout" if isinstance(exc, httpx.TimeoutException) else "error"
        limit = timeout if timeout is not None else self.client.endpoint.timeout_s
        return error_for_exception(exc, model=self.model, url=self.url, timeout=limit)

    def usage(self, tokens_in: int, tokens_out: int) -> Usage:
        """Settle the tokens and cost of a finished answer."""
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
        self.client._report(
            RequestInfo(
                model=self.model,
                endpoint=self.url,
                status=self.status,
                latency_s=time.perf_counter() - self.t0,
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                cost_usd=self.cost,
                http_status=self.http_status,
            )
        )
