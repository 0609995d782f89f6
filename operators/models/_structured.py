"""Structured output: asking for JSON shaped as a pydantic model, and reading the answer.

Two ways to ask, chosen per endpoint:

- ``json_schema`` (the default): the SDK's ``chat.completions.parse`` with the
  pydantic model, which sends its strict JSON schema as ``response_format``;
- ``json_object``: JSON mode with the schema in a system message, for servers
  without JSON-schema support.

Either way the answer is validated with pydantic here, so an answer that does
not fit is a :class:`ModelOutputInvalid` carrying what the model said, and the
call's usage is still known (it was billed).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from operators.models._results import ModelOutputInvalid
from streamflow.errors import ConfigError
from streamflow.events import dumps

__all__ = [
    "Message",
    "StructuredMode",
    "chat_messages",
    "parse_structured",
    "schema_hint",
    "with_schema_hint",
]

M = TypeVar("M", bound=BaseModel)

Message = Mapping[str, Any]
"""One chat message: ``{"role": "user", "content": "..."}``."""

StructuredMode = Literal["json_schema", "json_object"]
"""How structured output is asked for (see the module docstring)."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def chat_messages(messages: str | Sequence[Message], model: str) -> list[dict[str, Any]]:
    """The request's messages (one user message for a string).

    Raises:
        ConfigError: no model name, or no message.
    """
    if not model:
        raise ConfigError("a model name is required (model='...')")
    chat = (
        [{"role": "user", "content": messages}]
        if isinstance(messages, str)
        else [dict(m) for m in messages]
    )
    if not chat:
        raise ConfigError("chat needs at least one message")
    return chat


@functools.cache
def schema_hint(model: type[BaseModel]) -> str:
    """The system message that asks for one JSON object shaped as ``model``.

    Built once per model: pydantic does not cache the JSON schema, and making
    it costs about as much as the rest of a request's preparation.
    """
    schema = dumps(model.model_json_schema()).decode()
    return f"Answer with one JSON object only, matching this JSON schema: {schema}"


def with_schema_hint(
    messages: list[dict[str, Any]], response_model: type[BaseModel]
) -> list[dict[str, Any]]:
    """JSON mode's messages: the schema first, since JSON mode needs the word JSON in the prompt."""
    return [{"role": "system", "content": schema_hint(response_model)}, *messages]


def parse_structured(content: str, response_model: type[M], model: str) -> M:
    """Validate the model's answer as ``response_model`` (a code fence around it is accepted).

    Raises:
        ModelOutputInvalid: the answer is not JSON, or does not fit the model.
    """
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
