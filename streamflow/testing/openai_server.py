"""A local HTTP server that speaks the OpenAI wire format, for tests and demos.

Real HTTP on 127.0.0.1 (an ephemeral port unless one is given): a Starlette
application served by uvicorn (install ``streamflow-ai[testing]``). It serves::

    POST /v1/chat/completions   plain, or ``stream: true`` as server-sent events
                                (usage in a last chunk with stream_options.include_usage)
    POST /v1/embeddings         unit vectors hashed from the words of each text
    GET  /v1/models             the configured model names

Everything it does is deterministic for a given seed: replies are a function of
the prompt (or of a ``reply`` callable), token counts come from the text, and
the injected faults follow a seeded random stream. Structured-output requests
(``response_format`` of type ``json_schema``, or ``json_object`` with the schema
quoted in the prompt) get a JSON object that fits the requested schema. Faults:
500s, 429s with ``Retry-After``, hangs, answers whose JSON is broken, slow streams. Every request is
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
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from streamflow.errors import ConfigError, DecodeError
from streamflow.events import loads
from streamflow.testing._asgi import ABANDONED, UvicornServer, sleep_unless_gone
from streamflow.testing._openai_wire import (
    Reply,
    broken_json,
    chat_reply,
    count_tokens,
    default_reply,
    embeddings_reply,
    error_reply,
    hashed_embedding,
    invalid_request,
    json_reply,
    retry_after_headers,
)

__all__ = [
    "Fault",
    "OpenAIServer",
    "ServedRequest",
    "count_tokens",
    "hashed_embedding",
    "main",
    "open_openai_server",
    "peak_in_window",
    "serve_openai_in_thread",
]


def peak_in_window(
    requests: Sequence[ServedRequest],
    window_s: float,
    weight: Callable[[ServedRequest], float] | None = None,
) -> float:
    """The most requests (or, with ``weight``, the most weight) started within any ``window_s``.

    What a rate limit of so many requests or tokens per window must never let through.
    """
    rows = sorted(requests, key=lambda r: r.started_at)
    best = total = 0.0
    lo = 0
    for row in rows:
        total += weight(row) if weight is not None else 1
        while row.started_at - rows[lo].started_at >= window_s:
            total -= weight(rows[lo]) if weight is not None else 1
            lo += 1
        best = max(best, total)
    return best


Latency = float | Callable[[dict[str, Any]], float]
ReplyFn = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class ServedRequest:
    """One request as the server saw it.

    Attributes:
        started_at: wall-clock time the request was read.
        finished_at: wall-clock time the response ended (or the client left).
        method, path: the HTTP method and path.
        model: the ``model`` of the request body, when it had one.
        status: the HTTP status sent; 499 when the client went away first.
        prompt_tokens, completion_tokens: usage the answer reported (0 unless a 200
            reached the client whole).
        stream: whether the reply was streamed.
        abandoned: the client closed the connection before the response ended.
        invalid_json: the answer's content was JSON broken on purpose.
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
    invalid_json: bool = False


@dataclass(frozen=True)
class Fault:
    """A scripted answer, served before any other rule applies.

    Attributes:
        status: the HTTP status to send (429, 500, 503, 400, ...).
        retry_after: seconds for the ``Retry-After`` header, when set.
        retry_after_header: a raw ``Retry-After`` value (an HTTP date, say); wins
            over ``retry_after``.
        message: the error message in the body.
        hang_s: instead of an error, hold the request this long before answering
            normally (a hung endpoint, from the client's side).
        invalid_json: instead of an error, answer 200 with usage but content whose
            JSON is cut short (billed, and not what was asked for).
    """

    status: int = 500
    retry_after: float | None = None
    retry_after_header: str | None = None
    message: str = "injected fault"
    hang_s: float | None = None
    invalid_json: bool = False


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
        hang_rate: probability that a request is held ``hang_s`` seconds first.
        hang_s: how long a hung request is held.
        invalid_json_rate: probability that a structured-output answer's JSON is broken.
        reply: ``reply(request_json) -> str`` for chat content; default follows the request.
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
        hang_rate: float = 0.0,
        hang_s: float = 3600.0,
        invalid_json_rate: float = 0.0,
        reply: ReplyFn | None = None,
        embedding_dims: int = 64,
        models: Sequence[str] = ("streamflow-test", "streamflow-embed"),
        api_key: str | None = None,
        echo_headers_in_errors: bool = False,
        tokenizer: Callable[[str], int] = count_tokens,
        seed: int = 0,
    ) -> None:
        rates = (error_rate, rate_limit_rate, hang_rate, invalid_json_rate)
        if not all(0 <= rate <= 1 for rate in rates):
            raise ConfigError(
                "error_rate, rate_limit_rate, hang_rate and invalid_json_rate must be "
                "between 0 and 1"
            )
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
        self.hang_rate = hang_rate
        self.hang_s = hang_s
        self.invalid_json_rate = invalid_json_rate
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
        self._server: UvicornServer | None = None
        self._counter = 0
        self._app = Starlette(
            routes=[
                Route("/{path:path}", self._answer, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application (mount it elsewhere, or let :meth:`start` serve it)."""
        # Stamp the arrival before routing and body reading, so rate checks on
        # ``started_at`` see when the request came, not when it was answered.
        scope["streamflow.arrived"] = time.time()
        await self._app(scope, receive, send)

    # -- lifecycle -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give a client: ``http://host:port/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        """Start listening; ``port`` holds the bound port afterwards."""
        self._changed = asyncio.Condition()
        self._server = UvicornServer(self.app, self.host, self.port)
        self.port = await self._server.start()

    async def aclose(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            await self._server.stop()
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
        chosen = [r for r in self.requests if path is None or r.path == path]
        return peak_in_window(chosen, window_s) / window_s

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

    async def _answer(self, request: Request) -> Response:
        started = float(request.scope.get("streamflow.arrived") or time.time())
        method = request.method
        path = request.url.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        payload: dict[str, Any] = {}
        model: str | None = None
        reply: Reply
        broken = False
        try:
            body = await request.body()
            if body:
                parsed = loads(body)
                if not isinstance(parsed, dict):
                    raise DecodeError("the request body must be a JSON object")
                payload = parsed
                model = payload.get("model") if isinstance(payload.get("model"), str) else None
            reply, broken = await self._route(request, method, path, headers, payload)
        except DecodeError as exc:
            reply = error_reply(400, f"invalid JSON body: {exc}", "invalid_request_error")
        except _ClientGone:
            await self._record(
                ServedRequest(started, time.time(), method, path, model, ABANDONED, abandoned=True)
            )
            return Response(status_code=ABANDONED)
        except Exception as exc:
            # A failing reply or latency function is the test's bug: say so in a 500.
            reply = error_reply(500, f"the test server failed: {exc!r}", "server_error")

        def record(abandoned: bool) -> ServedRequest:
            billed = reply.status == 200 and not abandoned
            return ServedRequest(
                started_at=started,
                finished_at=time.time(),
                method=method,
                path=path,
                model=model,
                status=ABANDONED if abandoned else reply.status,
                prompt_tokens=reply.prompt_tokens if billed else 0,
                completion_tokens=reply.completion_tokens if billed else 0,
                stream=reply.chunks is not None,
                abandoned=abandoned,
                invalid_json=broken,
            )

        if reply.chunks is None:
            await self._record(record(False))
            return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))
        return StreamingResponse(
            self._stream(request, reply.chunks, record),
            status_code=reply.status,
            headers=dict(reply.headers),
        )

    async def _stream(
        self,
        request: Request,
        chunks: list[bytes],
        record: Callable[[bool], ServedRequest],
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            for i, chunk in enumerate(chunks):
                if i and self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                yield chunk
            finished = True
        finally:
            # Starlette cancels this generator when the client disconnects.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record(record(not finished)))

    async def _route(
        self,
        request: Request,
        method: str,
        path: str,
        headers: dict[str, str],
        payload: dict[str, Any],
    ) -> tuple[Reply, bool]:
        routes = {
            "/v1/chat/completions": "POST",
            "/v1/embeddings": "POST",
            "/v1/models": "GET",
        }
        if path not in routes:
            return error_reply(404, f"no route for {path}", "invalid_request_error"), False
        if method != routes[path]:
            reply = error_reply(405, f"{method} is not allowed on {path}", "invalid_request_error")
            return reply, False
        auth = self._check_auth(headers)
        if auth is not None:
            return auth, False
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "streamflow"} for m in self.models]
            return json_reply(200, {"object": "list", "data": data}), False
        problem = invalid_request(path, payload)
        if problem is not None:
            return error_reply(400, problem, "invalid_request_error"), False
        fault = self._next_fault()
        refusal = self._refusal(fault, headers)
        if refusal is not None:
            return refusal, False
        delay = self.latency(payload) if callable(self.latency) else self.latency
        if fault is not None and fault.hang_s is not None:
            delay += fault.hang_s
        elif self.hang_rate and self._draw() < self.hang_rate:
            delay += self.hang_s
        if delay > 0 and await sleep_unless_gone(request, delay):
            raise _ClientGone
        if path == "/v1/embeddings":
            reply = embeddings_reply(payload, dims=self.embedding_dims, tokenizer=self.tokenizer)
            return reply, False
        content = self.reply(payload) if self.reply is not None else default_reply(payload)
        broken = (fault is not None and fault.invalid_json) or (
            _structured(payload)
            and bool(self.invalid_json_rate)
            and self._draw() < self.invalid_json_rate
        )
        if broken:
            content = broken_json(content)
        self._counter += 1
        ident = f"chatcmpl-{self._counter:08d}"
        return chat_reply(payload, content, ident=ident, tokenizer=self.tokenizer), broken

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def _check_auth(self, headers: dict[str, str]) -> Reply | None:
        if self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return error_reply(
            401, self._with_headers("Incorrect API key provided", headers), "invalid_api_key"
        )

    def _with_headers(self, message: str, headers: dict[str, str]) -> str:
        if not self.echo_headers_in_errors:
            return message
        return f"{message}; request headers: {headers}"

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _refusal(self, fault: Fault | None, headers: dict[str, str]) -> Reply | None:
        """The 429/5xx answer this request gets, if any (faults, capacity, random)."""
        if fault is not None and fault.hang_s is None and not fault.invalid_json:
            reply = error_reply(fault.status, self._with_headers(fault.message, headers), "fault")
            if fault.retry_after_header is not None:
                reply.headers.append(("retry-after", fault.retry_after_header))
            elif fault.retry_after is not None:
                reply.headers.extend(retry_after_headers(fault.retry_after))
            return reply
        if self.capacity_rps is not None:
            now = time.monotonic()
            with self._lock:
                while self._admitted and now - self._admitted[0] >= 1.0:
                    self._admitted.popleft()
                full = len(self._admitted) >= self.capacity_rps
                if full:
                    wait = 1.0 - (now - self._admitted[0])
                else:
                    self._admitted.append(now)
            if full:
                reply = error_reply(
                    429, "capacity exceeded: too many requests", "rate_limit_exceeded"
                )
                reply.headers.extend(retry_after_headers(wait))
                return reply
        if self.rate_limit_rate and self._draw() < self.rate_limit_rate:
            reply = error_reply(429, "rate limit reached", "rate_limit_exceeded")
            reply.headers.extend(retry_after_headers(self.retry_after))
            return reply
        if self.error_rate and self._draw() < self.error_rate:
            return error_reply(
                500, self._with_headers("the server had an error", headers), "server_error"
            )
        return None


class _ClientGone(Exception):
    """The client closed the connection while its request was held."""


def _structured(payload: dict[str, Any]) -> bool:
    response_format = payload.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


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
    parser.add_argument("--hang-rate", type=float, default=0.0, help="probability of a hang")
    parser.add_argument("--hang-s", type=float, default=3600.0, help="seconds a hang lasts")
    parser.add_argument(
        "--invalid-json-rate",
        type=float,
        default=0.0,
        help="probability that a structured answer's JSON is broken",
    )
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
            hang_rate=args.hang_rate,
            hang_s=args.hang_s,
            invalid_json_rate=args.invalid_json_rate,
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
