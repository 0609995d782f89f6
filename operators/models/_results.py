"""What a model call returns and reports: usage, results, request info."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from operators.models._errors import RequestStatus
from streamflow.errors import ConfigError, StepFailed
from streamflow.events import StepRecord

__all__ = [
    "ChatResult",
    "ClientStatistics",
    "EmbedResult",
    "ModelOutputInvalid",
    "RequestInfo",
    "Usage",
    "add_costs",
    "usage_record",
]

T = TypeVar("T")


class ModelOutputInvalid(StepFailed):
    """The model's answer is not the structured output asked for.

    Attributes:
        model: the model that answered.
        content: what it answered.
        usage: what the answer cost (it was billed), once the client knows it.
    """

    def __init__(self, message: str, *, model: str, content: str) -> None:
        super().__init__(message)
        self.model = model
        self.content = content
        self.usage: Usage | None = None


@dataclass(frozen=True)
class Usage:
    """What one call (or several, added with ``+``) used and cost.

    Attributes:
        model: the model called ("a+b" for a sum over several models).
        tokens_in: prompt tokens, as the server reported them (0 when it did not).
        tokens_out: completion tokens.
        latency_s: seconds from sending the request to the end of the answer.
        cost_usd: from the client's price table; None when a model called has no
            price (the cost is unknown, not 0).
        started_at: wall-clock time the call started.
        requests: HTTP requests behind these numbers.
    """

    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = 0.0
    started_at: float = 0.0
    requests: int = 1

    def __add__(self, other: Usage) -> Usage:
        models = self.model if other.model == self.model else f"{self.model}+{other.model}"
        return Usage(
            model=models,
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            latency_s=self.latency_s + other.latency_s,
            cost_usd=add_costs(self.cost_usd, other.cost_usd),
            started_at=min(self.started_at, other.started_at),
            requests=self.requests + other.requests,
        )

    def to_record(self, step: str, *, outcome: str = "ok", detail: str | None = None) -> StepRecord:
        """A trace record for ``step`` carrying this usage.

        Appended as the last record of an event inside ``map_async(name=step)``,
        it gets the step's timing and attempt filled in and keeps model, tokens
        and cost.

        Args:
            step: the step's name (the ``name`` given to map_async).
            outcome: the record's outcome.
            detail: a short note for the trace.

        Returns:
            The record.
        """
        return StepRecord(
            step=step,
            started_at=self.started_at,
            duration_s=self.latency_s,
            outcome=outcome,
            model=self.model,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=self.cost_usd,
            detail=detail,
        )


def usage_record(step: str, *usages: Usage, detail: str | None = None) -> StepRecord:
    """One trace record for ``step`` summing the usage of every model call it made.

    Args:
        step: the step's name.
        *usages: the usage of each call (at least one).
        detail: a short note for the trace.

    Returns:
        The record.

    Raises:
        ConfigError: when no usage is given.
    """
    if not usages:
        raise ConfigError("usage_record needs the usage of at least one call")
    total = usages[0]
    for usage in usages[1:]:
        total = total + usage
    return total.to_record(step, detail=detail)


@dataclass(frozen=True)
class RequestInfo:
    """One HTTP attempt, as reported to the ``on_request`` hook.

    Attributes:
        model: the model asked for.
        endpoint: the URL called (no credentials).
        status: "ok", "429", "5xx", "4xx", "timeout" (the endpoint was too slow,
            or the caller cancelled the call, as a step timeout does) or "error".
        latency_s: seconds the attempt took.
        tokens_in, tokens_out: tokens billed (0 unless ok).
        cost_usd: the cost of those tokens (None: the model has no price).
        http_status: the HTTP status code, when an answer came.
        started_at: wall-clock time the attempt started.
        error: the type of the error the attempt ended with, if any.
    """

    model: str
    endpoint: str
    status: RequestStatus
    latency_s: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = 0.0
    http_status: int | None = None
    started_at: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ClientStatistics:
    """Totals over every HTTP attempt a client made.

    Attributes:
        requests: attempts per status label.
        tokens_in, tokens_out: tokens billed.
        cost_usd: their cost, priced models only.
        unpriced: models called that have no price.
    """

    requests: Mapping[str, int]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    unpriced: frozenset[str] = frozenset()


def add_costs(first: float | None, second: float | None) -> float | None:
    """The sum of two costs, unknown (None) when either is."""
    return None if first is None or second is None else first + second


@dataclass(frozen=True)
class ChatResult(Generic[T]):
    """A chat completion.

    Attributes:
        content: the assistant's text.
        parsed: the validated ``response_model`` instance, or None without one.
        usage: tokens, latency and cost of the call.
        finish_reason: why the model stopped ("stop", "length", ...).
    """

    content: str
    parsed: T
    usage: Usage
    finish_reason: str | None = None


@dataclass(frozen=True)
class EmbedResult:
    """Embedding vectors, one per input text in order, and the call's usage."""

    vectors: list[list[float]]
    usage: Usage

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self.vectors)

    def __getitem__(self, index: int) -> list[float]:
        return self.vectors[index]
