"""The OpenAI wire format on the server side: validating requests, building answers."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamflow.events import dumps, loads
from streamflow.testing._schema_answer import answer_for_schema, schema_in_text

__all__ = [
    "Reply",
    "broken_json",
    "chat_reply",
    "count_tokens",
    "default_reply",
    "embeddings_reply",
    "error_body",
    "error_reply",
    "hashed_embedding",
    "invalid_request",
    "json_reply",
    "retry_after_headers",
    "text_of",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PASSAGE = re.compile(r"^\[([A-Za-z][\w.-]*)\][^\n]*\n([^\n]+)", re.MULTILINE)
_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)")


@dataclass
class Reply:
    """One HTTP answer: a whole body, or ``chunks`` sent one by one (SSE).

    Attributes:
        status: the HTTP status.
        body: the body of a whole answer.
        headers: extra headers (content type, Retry-After).
        chunks: the server-sent events of a streamed answer, or None.
        prompt_tokens, completion_tokens: the usage the answer reports.
    """

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


_PIECE = re.compile(r"\s*\S+\s*|\s+")


def chat_reply(
    payload: dict[str, Any],
    content: str,
    *,
    ident: str,
    tokenizer: Callable[[str], int],
) -> Reply:
    """A chat completion (or its SSE chunks when ``stream`` is set) answering with ``content``.

    ``max_tokens`` cuts the content (finish reason "length"); usage is counted
    with ``tokenizer`` over the messages and the content.
    """
    messages: list[dict[str, Any]] = payload["messages"]
    model = str(payload["model"])
    prompt_tokens = sum(tokenizer(text_of(m.get("content"))) for m in messages)
    finish = "stop"
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        cut = _truncate_tokens(content, max_tokens)
        if cut != content:
            content, finish = cut, "length"
    completion_tokens = tokenizer(content)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    created = int(time.time())
    if not payload.get("stream"):
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish,
        }
        body = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        reply = json_reply(200, body)
    else:
        options = payload.get("stream_options") or {}
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        base: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": ""}, None)
        ]
        deltas += [({"content": piece}, None) for piece in _PIECE.findall(content)]
        deltas.append(({}, finish))
        chunks = []
        for delta, reason in deltas:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            if include_usage:
                chunk["usage"] = None
            chunks.append(_sse(chunk))
        if include_usage:
            chunks.append(_sse({**base, "choices": [], "usage": usage}))
        chunks.append(b"data: [DONE]\n\n")
        reply = Reply(200, headers=[("content-type", "text/event-stream")], chunks=chunks)
    reply.prompt_tokens, reply.completion_tokens = prompt_tokens, completion_tokens
    return reply


def embeddings_reply(
    payload: dict[str, Any], *, dims: int, tokenizer: Callable[[str], int]
) -> Reply:
    """Hashed embeddings for the request's ``input`` (``dimensions`` wins over ``dims``)."""
    raw = payload["input"]
    texts: list[str] = [raw] if isinstance(raw, str) else list(raw)
    size = payload.get("dimensions") or dims
    data = [
        {"object": "embedding", "index": i, "embedding": hashed_embedding(text, size)}
        for i, text in enumerate(texts)
    ]
    tokens = sum(tokenizer(text) for text in texts)
    body = {
        "object": "list",
        "data": data,
        "model": payload["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    reply = json_reply(200, body)
    reply.prompt_tokens = tokens
    return reply


def count_tokens(text: str) -> int:
    """Count tokens the way the test server does: words and punctuation marks.

    Args:
        text: any text.

    Returns:
        The number of word runs plus the number of punctuation characters.
    """
    return len(_TOKEN.findall(text))


def hashed_embedding(text: str, dims: int) -> list[float]:
    """A unit vector for ``text``: its lower-cased words hashed into ``dims`` buckets.

    Texts that share words get similar vectors, so retrieval demos behave
    sensibly; a text with no words is hashed whole.
    """
    vector = [0.0] * dims
    words = re.findall(r"\w+", text.lower()) or [text]
    for word in words:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dims
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def invalid_request(path: str, payload: dict[str, Any]) -> str | None:
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "you must provide a model parameter"
    if path == "/v1/embeddings":
        raw = payload.get("input")
        ok = isinstance(raw, str) or (
            isinstance(raw, list) and bool(raw) and all(isinstance(t, str) for t in raw)
        )
        dims = payload.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or dims < 1):
            return "'dimensions' must be a positive integer"
        return None if ok else "'input' must be a string or a non-empty list of strings"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "each message must be an object with a 'role'"
    return None


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def default_reply(payload: dict[str, Any]) -> str:
    """The test model's answer: JSON shaped as the request asks, or text drawn from the prompt.

    A structured-output request (``response_format`` of type ``json_schema``,
    or ``json_object`` with a JSON schema quoted in a message) gets one JSON
    object that fits the schema. A prompt that carries passages as
    ``[id] title`` followed by a line of text is answered with the first
    sentence of the first passage and its ``[id]``, as a grounded answer would;
    anything else is echoed back.
    """
    messages = payload["messages"]
    question = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            question = " ".join(text_of(message.get("content")).split())
            break
    prompt = "\n".join(text_of(m.get("content")) for m in messages)
    response_format = payload.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        schema: Any = None
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            schema = schema_in_text(prompt)
        if isinstance(schema, dict):
            return dumps(answer_for_schema(schema, prompt=prompt, question=question)).decode()
        return dumps({"answer": _echo(question), "question": question}).decode()
    last_user = next(
        (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    passage = _PASSAGE.search(last_user)
    if passage is not None:
        found = _SENTENCE.match(passage.group(2).strip())
        sentence = found.group(1) if found else passage.group(2).strip()
        return f"{sentence} [{passage.group(1)}]"
    return _echo(question)


def _echo(question: str) -> str:
    if len(question) > 200:
        question = question[:197] + "..."
    return f'You asked: "{question}". This is a short answer from the local test model.'


def broken_json(content: str) -> str:
    """``content`` cut short so it no longer parses as JSON (the invalid-JSON fault)."""
    try:
        loads(content.encode())
    except Exception:
        return content
    return content[: max(1, len(content) // 2)]


def _truncate_tokens(text: str, limit: int) -> str:
    for count, match in enumerate(_TOKEN.finditer(text), start=1):
        if count == limit:
            return text[: match.end()]
    return text


def retry_after_headers(seconds: float) -> list[tuple[str, str]]:
    # Retry-After takes whole seconds; OpenAI adds retry-after-ms for precision.
    seconds = max(0.0, seconds)
    return [
        ("retry-after", str(math.ceil(seconds))),
        ("retry-after-ms", str(round(seconds * 1000))),
    ]


def json_reply(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, dumps(body), [("content-type", "application/json")])


def error_body(message: str, status: int, kind: str = "error") -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})


def error_reply(status: int, message: str, kind: str) -> Reply:
    return Reply(status, error_body(message, status, kind), [("content-type", "application/json")])


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + dumps(chunk) + b"\n\n"
