"""The OpenAI wire format on the client side: request bodies and reading answers."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from operators.models._http import redact
from operators.models._results import ModelOutputInvalid
from streamflow.errors import ConfigError, DecodeError, StepFailed, Unavailable
from streamflow.events import dumps, loads

__all__ = [
    "Message",
    "chat_payload",
    "chat_tokens",
    "deltas",
    "embed_tokens",
    "json_object",
    "parse_structured",
    "sse_chunk",
    "unexpected",
]

M = TypeVar("M", bound=BaseModel)

Message = Mapping[str, Any]
"""One chat message: ``{"role": "user", "content": "..."}``."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def chat_payload(
    messages: str | Sequence[Message],
    model: str,
    temperature: float | None,
    max_tokens: int | None,
    response_model: type[BaseModel] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if not model:
        raise ConfigError("a model name is required (model='...')")
    chat: list[dict[str, Any]] = (
        [{"role": "user", "content": messages}]
        if isinstance(messages, str)
        else [dict(m) for m in messages]
    )
    if not chat:
        raise ConfigError("chat needs at least one message")
    payload: dict[str, Any] = {"model": model, "messages": chat}
    if temperature is not None:
        payload["temperature"] = temperature
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    if response_model is not None:
        # json_object mode requires the word JSON in the prompt, and the model
        # needs the schema to answer in the right shape.
        payload["messages"] = [{"role": "system", "content": schema_hint(response_model)}, *chat]
        payload["response_format"] = {"type": "json_object"}
    if extra:
        payload.update(extra)
    return payload


@functools.cache
def schema_hint(model: type[BaseModel]) -> str:
    """The system message that asks for one JSON object shaped as ``model``.

    Built once per model: pydantic does not cache the JSON schema, and making
    it costs about as much as the rest of a request's preparation.
    """
    schema = dumps(model.model_json_schema()).decode()
    return f"Answer with one JSON object only, matching this JSON schema: {schema}"


def json_object(body: bytes) -> dict[str, Any]:
    parsed = loads(body)
    if not isinstance(parsed, dict):
        raise DecodeError("expected a JSON object")
    return parsed


def chat_tokens(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def embed_tokens(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _count(usage.get("prompt_tokens", usage.get("total_tokens"))), 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def parse_structured(content: str, response_model: type[M], model: str) -> M:
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    try:
        return response_model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(root)"
        snippet = " ".join(content.split())[:120]
        raise ModelOutputInvalid(
            f"model {model!r} did not answer with a valid {response_model.__name__}: "
            f"{where}: {first['msg']} (answer began: {snippet!r})",
            model=model,
            content=content,
        ) from exc


def unexpected(what: str, model: str) -> StepFailed:
    return StepFailed(f"model endpoint answered 200 without a valid {what} for {model!r}")


def sse_chunk(line: str, model: str, secrets: list[str]) -> dict[str, Any] | str | None:
    """The JSON of one SSE ``data:`` line, "[DONE]", or None for other lines."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    try:
        chunk = json_object(data.encode())
    except DecodeError:
        raise unexpected("stream chunk", model) from None
    error = chunk.get("error")
    if error is not None:
        detail = error.get("message") if isinstance(error, dict) else error
        raise Unavailable(
            f"model endpoint failed mid-stream for {model!r}: {redact(str(detail), secrets)}"
        )
    return chunk


def deltas(chunk: dict[str, Any]) -> tuple[list[str], str | None]:
    """The text deltas of one stream chunk and its finish reason, if it has one."""
    out: list[str] = []
    finish: str | None = None
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(text, str) and text:
            out.append(text)
        if choice.get("finish_reason"):
            finish = str(choice["finish_reason"])
    return out, finish
