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
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h11

from streamflow.errors import ConfigError, DecodeError
from streamflow.events import loads
from streamflow.testing._http11 import (
    ABANDONED,
    ClientGone,
    Exchange,
    Reply,
    send_reply,
    serve_connection,
)
from streamflow.testing._openai_wire import (
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
        self._closing = False

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
        self._closing = True
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

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await serve_connection(reader, writer, self._answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Cancelled by aclose(): end quietly, since asyncio's stream callback
            # on Python 3.11 reports a cancelled connection task as an error.
            if not self._closing:
                raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, exchange: Exchange, head: h11.Request, body: bytes) -> None:
        started = time.time()
        method = head.method.decode("ascii", "replace")
        path = head.target.decode("ascii", "replace").split("?", 1)[0]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}
        payload: dict[str, Any] = {}
        model: str | None = None
        reply: Reply
        try:
            if body:
                parsed = loads(body)
                if not isinstance(parsed, dict):
                    raise DecodeError("the request body must be a JSON object")
                payload = parsed
                model = payload.get("model") if isinstance(payload.get("model"), str) else None
            reply = await self._route(exchange, method, path, headers, payload)
        except DecodeError as exc:
            reply = error_reply(400, f"invalid JSON body: {exc}", "invalid_request_error")
        except ClientGone:
            await self._record(
                ServedRequest(started, time.time(), method, path, model, ABANDONED, abandoned=True)
            )
            raise ConnectionResetError("client went away") from None
        except Exception as exc:
            # A failing reply or latency function is the test's bug: say so in a 500.
            reply = error_reply(500, f"the test server failed: {exc!r}", "server_error")
        abandoned = False
        try:
            await send_reply(exchange, reply, self.chunk_delay)
        except (ClientGone, ConnectionError):
            abandoned = True
        billed = reply.status == 200 and not abandoned
        await self._record(
            ServedRequest(
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
            )
        )
        if abandoned:
            raise ConnectionResetError("client went away")

    async def _route(
        self,
        exchange: Exchange,
        method: str,
        path: str,
        headers: dict[str, str],
        payload: dict[str, Any],
    ) -> Reply:
        routes = {
            "/v1/chat/completions": "POST",
            "/v1/embeddings": "POST",
            "/v1/models": "GET",
        }
        if path not in routes:
            return error_reply(404, f"no route for {path}", "invalid_request_error")
        if method != routes[path]:
            return error_reply(405, f"{method} is not allowed on {path}", "invalid_request_error")
        auth = self._check_auth(headers)
        if auth is not None:
            return auth
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "streamflow"} for m in self.models]
            return json_reply(200, {"object": "list", "data": data})
        problem = invalid_request(path, payload)
        if problem is not None:
            return error_reply(400, problem, "invalid_request_error")
        refusal = self._refusal(headers)
        if refusal is not None:
            return refusal
        delay = self.latency(payload) if callable(self.latency) else self.latency
        if delay > 0:
            await exchange.sleep(delay)
        if path == "/v1/embeddings":
            return embeddings_reply(payload, dims=self.embedding_dims, tokenizer=self.tokenizer)
        content = self.reply(payload) if self.reply is not None else default_reply(payload)
        self._counter += 1
        ident = f"chatcmpl-{self._counter:08d}"
        return chat_reply(payload, content, ident=ident, tokenizer=self.tokenizer)

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

    def _refusal(self, headers: dict[str, str]) -> Reply | None:
        """The 429/5xx answer this request gets, if any (faults, capacity, random)."""
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            reply = error_reply(fault.status, self._with_headers(fault.message, headers), "fault")
            if fault.retry_after_header is not None:
                reply.headers.append(("retry-after", fault.retry_after_header))
            elif fault.retry_after is not None:
                reply.headers.extend(retry_after_headers(fault.retry_after))
            return reply
        if self.capacity_rps is not None:
            now = time.monotonic()
            while self._admitted and now - self._admitted[0] >= 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= self.capacity_rps:
                reply = error_reply(
                    429, "capacity exceeded: too many requests", "rate_limit_exceeded"
                )
                reply.headers.extend(retry_after_headers(1.0 - (now - self._admitted[0])))
                return reply
            self._admitted.append(now)
        if self.rate_limit_rate and self._rng.random() < self.rate_limit_rate:
            reply = error_reply(429, "rate limit reached", "rate_limit_exceeded")
            reply.headers.extend(retry_after_headers(self.retry_after))
            return reply
        if self.error_rate and self._rng.random() < self.error_rate:
            return error_reply(
                500, self._with_headers("the server had an error", headers), "server_error"
            )
        return None


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
