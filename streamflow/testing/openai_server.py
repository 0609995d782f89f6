"""A local HTTP server that speaks the OpenAI wire format, for tests and demos.

Real HTTP/1.1 on 127.0.0.1 (an ephemeral port unless one is given), built on
``asyncio.start_server`` with h11 doing the HTTP framing (keep-alive,
Content-Length, chunked bodies). It serves::

    POST /v1/chat/completions   plain, or ``stream: true`` as server-sent events
                                (usage in a last chunk with stream_options.include_usage)
    POST /v1/embeddings         unit vectors hashed from the words of each text
    GET  /v1/models             the configured model names

Everything it does is deterministic for a given seed: replies are a function of
the prompt (or of a ``reply`` callable), token counts come from the text, and
the injected 429s and 5xx follow a seeded random stream. Every request is
recorded server-side (:class:`ServedRequest`) so a test can count rates and
sum usage on the server's side of the wire.

Open it from async code with ``async with open_openai_server(...) as server``,
from a plain thread with ``with serve_openai_in_thread(...) as server``, or run
``python -m streamflow.testing.openai_server --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import math
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

from streamflow.errors import ConfigError, DecodeError
from streamflow.events import dumps, loads

__all__ = [
    "Fault",
    "OpenAIServer",
    "ServedRequest",
    "count_tokens",
    "hashed_embedding",
    "main",
    "open_openai_server",
    "serve_openai_in_thread",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PIECE = re.compile(r"\s*\S+\s*|\s+")
_MAX_BODY = 16 * 1024 * 1024
_READ_SIZE = 65536
_ABANDONED = 499  # nginx's code for "the client closed the connection first"

Latency = float | Callable[[dict[str, Any]], float]
ReplyFn = Callable[[dict[str, Any]], str]


def count_tokens(text: str) -> int:
    """Count tokens the way the test server does: words and punctuation marks.

    Args:
        text: any text.

    Returns:
        The number of word runs plus the number of punctuation characters.
    """
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class ServedRequest:
    """One request as the server saw it.

    Attributes:
        started_at: wall-clock time the request was read.
        finished_at: wall-clock time the response ended (or the client left).
        method, path: the HTTP method and path.
        model: the ``model`` of the request body, when it had one.
        status: the HTTP status sent; 499 when the client went away first.
        prompt_tokens, completion_tokens: usage billed for this request (0 unless 200).
        stream: whether the reply was streamed.
        abandoned: the client closed the connection before the response ended.
    """

    started_at: float
    finished_at: float
    method: str
    path: str
    model: str | None
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stream: bool = False
    abandoned: bool = False


@dataclass(frozen=True)
class Fault:
    """A scripted error answer, served before any other rule applies.

    Attributes:
        status: the HTTP status to send (429, 500, 503, 400, ...).
        retry_after: seconds for the ``Retry-After`` header, when set.
        retry_after_header: a raw ``Retry-After`` value (an HTTP date, say); wins
            over ``retry_after``.
        message: the error message in the body.
    """

    status: int
    retry_after: float | None = None
    retry_after_header: str | None = None
    message: str = "injected fault"


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] | None = None  # streamed as SSE when set
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ClientGone(Exception):
    """The client closed the connection while we were answering."""


class OpenAIServer:
    """The server's state, settings and record of requests.

    Settings may be changed while it runs (``server.error_rate = 0.5``); they
    apply to the next request.

    Attributes:
        host, port: where it listens (``port`` is known once started).
        latency: seconds before each model answer, or a function of the request body.
        chunk_delay: seconds between streamed chunks.
        error_rate: probability of a 500 answer.
        rate_limit_rate: probability of a 429 answer with ``Retry-After: retry_after``.
        retry_after: seconds sent in ``Retry-After`` on random 429s.
        capacity_rps: requests per second above which it answers 429 (sliding 1 s window).
        reply: ``reply(request_json) -> str`` for chat content; default echoes the prompt.
        embedding_dims: length of embedding vectors unless a request asks for ``dimensions``.
        models: the names listed by ``GET /v1/models``.
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
        echo_headers_in_errors: put the request headers into error messages, as a
            careless proxy would (to test that clients never leak them).
        tokenizer: counts tokens for usage numbers.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: Latency = 0.0,
        chunk_delay: float = 0.0,
        error_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after: float = 1.0,
        capacity_rps: float | None = None,
        reply: ReplyFn | None = None,
        embedding_dims: int = 64,
        models: Sequence[str] = ("streamflow-test", "streamflow-embed"),
        api_key: str | None = None,
        echo_headers_in_errors: bool = False,
        tokenizer: Callable[[str], int] = count_tokens,
        seed: int = 0,
    ) -> None:
        if not 0 <= error_rate <= 1 or not 0 <= rate_limit_rate <= 1:
            raise ConfigError("error_rate and rate_limit_rate must be between 0 and 1")
        if capacity_rps is not None and capacity_rps <= 0:
            raise ConfigError(f"capacity_rps must be > 0, got {capacity_rps}")
        if embedding_dims < 1:
            raise ConfigError(f"embedding_dims must be >= 1, got {embedding_dims}")
        self.host = host
        self.port = port
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.error_rate = error_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after = retry_after
        self.capacity_rps = capacity_rps
        self.reply = reply
        self.embedding_dims = embedding_dims
        self.models = tuple(models)
        self.api_key = api_key
        self.echo_headers_in_errors = echo_headers_in_errors
        self.tokenizer = tokenizer
        self._rng = random.Random(seed)
        self._faults: collections.deque[Fault] = collections.deque()
        self._admitted: collections.deque[float] = collections.deque()
        self._requests: list[ServedRequest] = []
        self._lock = threading.Lock()
        self._changed: asyncio.Condition | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._counter = 0

    # -- lifecycle -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give a client: ``http://host:port/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        """Start listening; ``port`` holds the bound port afterwards."""
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> OpenAIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- scripting and inspection ---------------------------------------------

    def inject_fault(self, fault: Fault, *, times: int = 1) -> None:
        """Answer the next ``times`` model requests with ``fault``."""
        with self._lock:
            self._faults.extend([fault] * times)

    @property
    def requests(self) -> list[ServedRequest]:
        """A snapshot of every request served so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, *, path: str | None = None, status: int | None = None) -> int:
        """Count recorded requests, optionally only those to ``path`` or with ``status``."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path) and (status is None or r.status == status)
        )

    def usage_totals(self) -> tuple[int, int]:
        """Return (prompt_tokens, completion_tokens) summed over every request served."""
        served = self.requests
        return (
            sum(r.prompt_tokens for r in served),
            sum(r.completion_tokens for r in served),
        )

    def peak_rate(self, *, window_s: float = 1.0, path: str | None = None) -> float:
        """The most requests started within any ``window_s``, per second.

        Args:
            window_s: the sliding window's width in seconds.
            path: count only requests to this path.

        Returns:
            Requests per second in the busiest window (0.0 when none were made).
        """
        starts = sorted(r.started_at for r in self.requests if path is None or r.path == path)
        best, lo = 0, 0
        for hi, at in enumerate(starts):
            while at - starts[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best / window_s

    async def wait_for(
        self, predicate: Callable[[list[ServedRequest]], bool], *, timeout: float = 5.0
    ) -> list[ServedRequest]:
        """Wait until ``predicate(requests)`` holds; call from the server's event loop.

        Raises:
            TimeoutError: when it does not hold within ``timeout`` seconds.
        """
        if self._changed is None:
            raise ConfigError("start the server before waiting on it")
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.requests))
        return self.requests

    async def _record(self, served: ServedRequest) -> None:
        with self._lock:
            self._requests.append(served)
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # -- HTTP ----------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                request = await _next_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    writer.write(conn.send(_response(status, _error_body(str(exc), status))))
                    writer.write(conn.send(h11.Data(data=_error_body(str(exc), status))))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                return
            if request is None:
                return
            head, body = request
            await self._answer(conn, reader, writer, head, body)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _answer(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: h11.Request,
        body: bytes,
    ) -> None:
        started = time.time()
        method = head.method.decode("ascii", "replace")
        path = head.target.decode("ascii", "replace").split("?", 1)[0]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}
        payload: dict[str, Any] = {}
        model: str | None = None
        reply: _Reply
        try:
            if body:
                parsed = loads(body)
                if not isinstance(parsed, dict):
                    raise DecodeError("the request body must be a JSON object")
                payload = parsed
                model = payload.get("model") if isinstance(payload.get("model"), str) else None
            reply = await self._route(method, path, headers, payload, conn, reader)
        except DecodeError as exc:
            reply = _error(400, f"invalid JSON body: {exc}", "invalid_request_error")
        except _ClientGone:
            await self._record(
                ServedRequest(started, time.time(), method, path, model, _ABANDONED, abandoned=True)
            )
            raise ConnectionResetError("client went away") from None
        abandoned = False
        try:
            await _send(conn, reader, writer, reply, self.chunk_delay)
        except (_ClientGone, ConnectionError):
            abandoned = True
        billed = reply.status == 200 and not abandoned
        await self._record(
            ServedRequest(
                started_at=started,
                finished_at=time.time(),
                method=method,
                path=path,
                model=model,
                status=_ABANDONED if abandoned else reply.status,
                prompt_tokens=reply.prompt_tokens if billed else 0,
                completion_tokens=reply.completion_tokens if billed else 0,
                stream=reply.chunks is not None,
                abandoned=abandoned,
            )
        )
        if abandoned:
            raise ConnectionResetError("client went away")

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        payload: dict[str, Any],
        conn: h11.Connection,
        reader: asyncio.StreamReader,
    ) -> _Reply:
        routes = {
            "/v1/chat/completions": "POST",
            "/v1/embeddings": "POST",
            "/v1/models": "GET",
        }
        if path not in routes:
            return _error(404, f"no route for {path}", "invalid_request_error")
        if method != routes[path]:
            return _error(405, f"{method} is not allowed on {path}", "invalid_request_error")
        auth = self._check_auth(headers)
        if auth is not None:
            return auth
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "streamflow"} for m in self.models]
            return _json(200, {"object": "list", "data": data})
        problem = _invalid_request(path, payload)
        if problem is not None:
            return _error(400, problem, "invalid_request_error")
        refusal = self._refusal(headers)
        if refusal is not None:
            return refusal
        delay = self.latency(payload) if callable(self.latency) else self.latency
        if delay > 0:
            await _sleep_unless_gone(delay, conn, reader)
        if path == "/v1/embeddings":
            return self._embeddings(payload)
        return self._chat(payload)

    def _check_auth(self, headers: dict[str, str]) -> _Reply | None:
        if self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return _error(
            401, self._with_headers("Incorrect API key provided", headers), "invalid_api_key"
        )

    def _with_headers(self, message: str, headers: dict[str, str]) -> str:
        if not self.echo_headers_in_errors:
            return message
        return f"{message}; request headers: {headers}"

    def _refusal(self, headers: dict[str, str]) -> _Reply | None:
        """The 429/5xx answer this request gets, if any (faults, capacity, random)."""
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            reply = _error(fault.status, self._with_headers(fault.message, headers), "fault")
            if fault.retry_after_header is not None:
                reply.headers.append(("retry-after", fault.retry_after_header))
            elif fault.retry_after is not None:
                reply.headers.extend(_retry_after_headers(fault.retry_after))
            return reply
        if self.capacity_rps is not None:
            now = time.monotonic()
            while self._admitted and now - self._admitted[0] >= 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= self.capacity_rps:
                reply = _error(429, "capacity exceeded: too many requests", "rate_limit_exceeded")
                reply.headers.extend(_retry_after_headers(1.0 - (now - self._admitted[0])))
                return reply
            self._admitted.append(now)
        if self.rate_limit_rate and self._rng.random() < self.rate_limit_rate:
            reply = _error(429, "rate limit reached", "rate_limit_exceeded")
            reply.headers.extend(_retry_after_headers(self.retry_after))
            return reply
        if self.error_rate and self._rng.random() < self.error_rate:
            return _error(
                500, self._with_headers("the server had an error", headers), "server_error"
            )
        return None

    # -- model answers ---------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:08d}"

    def _chat(self, payload: dict[str, Any]) -> _Reply:
        messages: list[dict[str, Any]] = payload["messages"]
        model = str(payload["model"])
        prompt_tokens = sum(self.tokenizer(_text_of(m.get("content"))) for m in messages)
        content = self.reply(payload) if self.reply is not None else _default_reply(payload)
        finish = "stop"
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0:
            cut = _truncate_tokens(content, max_tokens)
            if cut != content:
                content, finish = cut, "length"
        completion_tokens = self.tokenizer(content)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ident, created = self._next_id("chatcmpl"), int(time.time())
        if not payload.get("stream"):
            body = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            reply = _json(200, body)
        else:
            options = payload.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            base = {"id": ident, "object": "chat.completion.chunk", "created": created}
            base["model"] = model
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
            reply = _Reply(200, headers=[("content-type", "text/event-stream")], chunks=chunks)
        reply.prompt_tokens, reply.completion_tokens = prompt_tokens, completion_tokens
        return reply

    def _embeddings(self, payload: dict[str, Any]) -> _Reply:
        raw = payload["input"]
        texts: list[str] = [raw] if isinstance(raw, str) else list(raw)
        dims = payload.get("dimensions") or self.embedding_dims
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_embedding(text, dims)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(self.tokenizer(text) for text in texts)
        body = {
            "object": "list",
            "data": data,
            "model": payload["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        reply = _json(200, body)
        reply.prompt_tokens = tokens
        return reply


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


def _invalid_request(path: str, payload: dict[str, Any]) -> str | None:
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


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _default_reply(payload: dict[str, Any]) -> str:
    question = ""
    for message in reversed(payload["messages"]):
        if message.get("role") == "user":
            question = " ".join(_text_of(message.get("content")).split())
            break
    if len(question) > 200:
        question = question[:197] + "..."
    answer = f'You asked: "{question}". This is a short answer from the local test model.'
    response_format = payload.get("response_format") or {}
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        return dumps({"answer": answer, "question": question}).decode()
    return answer


def _truncate_tokens(text: str, limit: int) -> str:
    for count, match in enumerate(_TOKEN.finditer(text), start=1):
        if count == limit:
            return text[: match.end()]
    return text


def _retry_after_headers(seconds: float) -> list[tuple[str, str]]:
    # Retry-After takes whole seconds; OpenAI adds retry-after-ms for precision.
    seconds = max(0.0, seconds)
    return [
        ("retry-after", str(math.ceil(seconds))),
        ("retry-after-ms", str(round(seconds * 1000))),
    ]


def _json(status: int, body: dict[str, Any]) -> _Reply:
    return _Reply(status, dumps(body), [("content-type", "application/json")])


def _error_body(message: str, status: int, kind: str = "error") -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})


def _error(status: int, message: str, kind: str) -> _Reply:
    return _Reply(
        status, _error_body(message, status, kind), [("content-type", "application/json")]
    )


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + dumps(chunk) + b"\n\n"


def _response(
    status: int, body: bytes | None, headers: Sequence[tuple[str, str]] = ()
) -> h11.Response:
    fields = [("server", "streamflow-openai-test"), *headers]
    if body is not None:
        fields.append(("content-length", str(len(body))))
    return h11.Response(status_code=status, headers=fields)


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes] | None:
    """Read one whole request (head and body); None when the client closed cleanly."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ_SIZE)
            conn.receive_data(data)
            if not data and head is None and conn.their_state is h11.IDLE:
                return None
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _sleep_unless_gone(
    seconds: float, conn: h11.Connection, reader: asyncio.StreamReader
) -> None:
    """Sleep, but raise _ClientGone as soon as the client closes the connection.

    A client that times out closes its socket; watching for that end-of-file is
    how the server notices an abandoned request instead of answering into the void.
    """
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    try:
        while not sleeper.done():
            watcher = asyncio.ensure_future(reader.read(_READ_SIZE))
            done, _ = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher not in done:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await watcher
                break
            try:
                data = watcher.result()
            except ConnectionError:
                data = b""
            if not data:
                raise _ClientGone()
            # Bytes of a pipelined next request: h11 keeps them for the next cycle.
            conn.receive_data(data)
    finally:
        sleeper.cancel()


async def _send(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reply: _Reply,
    chunk_delay: float,
) -> None:
    if reply.chunks is None:
        writer.write(conn.send(_response(reply.status, reply.body, reply.headers)))
        writer.write(conn.send(h11.Data(data=reply.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return
    # No content-length: h11 frames the stream with chunked transfer encoding.
    headers = [*reply.headers, ("cache-control", "no-cache")]
    writer.write(conn.send(_response(reply.status, None, headers)))
    await writer.drain()
    for index, chunk in enumerate(reply.chunks):
        if index and chunk_delay > 0:
            await _sleep_unless_gone(chunk_delay, conn, reader)
        writer.write(conn.send(h11.Data(data=chunk)))
        await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


@contextlib.asynccontextmanager
async def open_openai_server(**settings: Any) -> AsyncIterator[OpenAIServer]:
    """Run a local OpenAI-wire-format server for the duration of the block.

    Args:
        **settings: keyword arguments of :class:`OpenAIServer` (latency,
            error_rate, rate_limit_rate, capacity_rps, reply, ...).

    Yields:
        The running server; ``server.base_url`` is the URL to give a client.
    """
    server = OpenAIServer(**settings)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@contextlib.contextmanager
def serve_openai_in_thread(**settings: Any) -> Iterator[OpenAIServer]:
    """Run the server on its own event loop in a daemon thread (for sync code).

    Args:
        **settings: keyword arguments of :class:`OpenAIServer`.

    Yields:
        The running server; read ``requests``/``count``/``usage_totals`` from any thread.

    Raises:
        Exception: whatever starting the server raised (a port in use, say).
    """
    server = OpenAIServer(**settings)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        try:
            await stop.wait()
        finally:
            await server.aclose()

    thread = threading.Thread(
        target=loop.run_until_complete, args=(run(),), name="openai-test-server", daemon=True
    )
    thread.start()
    started.wait()
    try:
        if failure:
            raise failure[0]
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the OpenAI wire format until interrupted (``python -m ...openai_server``).

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m streamflow.testing.openai_server",
        description="Local server speaking the OpenAI wire format (deterministic replies).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of a 500")
    parser.add_argument("--rate-limit-rate", type=float, default=0.0, help="probability of a 429")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After on 429s")
    parser.add_argument("--capacity-rps", type=float, default=None, help="429 above this rate")
    parser.add_argument("--dims", type=int, default=64, help="embedding dimensions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with open_openai_server(
            host=args.host,
            port=args.port,
            latency=args.latency,
            chunk_delay=args.chunk_delay,
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            retry_after=args.retry_after,
            capacity_rps=args.capacity_rps,
            embedding_dims=args.dims,
            seed=args.seed,
        ) as server:
            print(f"serving the OpenAI wire format on {server.base_url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
