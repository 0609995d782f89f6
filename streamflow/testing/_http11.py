"""HTTP/1.1 over asyncio streams, with h11 doing the framing.

h11 handles keep-alive, Content-Length and chunked bodies; this module reads
whole requests, writes replies (a body, or a stream of chunks), and notices a
client that hangs up while its request is being answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import h11

__all__ = [
    "ABANDONED",
    "ClientGone",
    "Exchange",
    "Handler",
    "Reply",
    "send_reply",
    "serve_connection",
]

ABANDONED = 499
"""Status recorded for a request whose client closed the connection first (as nginx does)."""

_MAX_BODY = 16 * 1024 * 1024
_READ_SIZE = 65536


@dataclass
class Reply:
    """One HTTP answer: a whole body, or ``chunks`` sent one by one (SSE)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


class Exchange:
    """One connection's h11 state and streams, handed to the request handler."""

    def __init__(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise ClientGone as soon as the client closes the connection.

        A client that times out closes its socket; watching for that end-of-file
        is how the server notices an abandoned request instead of answering into
        the void.
        """
        sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
        try:
            while not sleeper.done():
                watcher = asyncio.ensure_future(self.reader.read(_READ_SIZE))
                done, _ = await asyncio.wait(
                    {sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED
                )
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
                    raise ClientGone()
                # Bytes of a pipelined next request: h11 keeps them for the next cycle.
                self.conn.receive_data(data)
        finally:
            sleeper.cancel()


Handler = Callable[[Exchange, h11.Request, bytes], Awaitable[None]]
"""Answers one request (by calling :func:`send_reply`); raises ConnectionError to hang up."""


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Serve requests on one connection until either side closes it."""
    exchange = Exchange(h11.Connection(h11.SERVER), reader, writer)
    conn = exchange.conn
    while True:
        try:
            request = await _next_request(exchange)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = f"bad request: {exc}".encode()
                reply = Reply(exc.error_status_hint, body, [("content-type", "text/plain")])
                await send_reply(exchange, reply, 0.0)
            return
        if request is None:
            return
        await handler(exchange, *request)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def send_reply(exchange: Exchange, reply: Reply, chunk_delay: float) -> None:
    """Write ``reply``; chunks are spaced by ``chunk_delay`` seconds.

    Raises:
        ClientGone, ConnectionError: the client went away meanwhile.
    """
    conn, writer = exchange.conn, exchange.writer
    if reply.chunks is None:
        writer.write(conn.send(_head(reply.status, reply.body, reply.headers)))
        writer.write(conn.send(h11.Data(data=reply.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return
    # No content-length: h11 frames the stream with chunked transfer encoding.
    headers = [*reply.headers, ("cache-control", "no-cache")]
    writer.write(conn.send(_head(reply.status, None, headers)))
    await writer.drain()
    for index, chunk in enumerate(reply.chunks):
        if index and chunk_delay > 0:
            await exchange.sleep(chunk_delay)
        writer.write(conn.send(h11.Data(data=chunk)))
        await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def _head(status: int, body: bytes | None, headers: Sequence[tuple[str, str]]) -> h11.Response:
    fields = [("server", "streamflow-openai-test"), *headers]
    if body is not None:
        fields.append(("content-length", str(len(body))))
    try:
        reason = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b"Client Closed Request" if status == ABANDONED else b""
    return h11.Response(status_code=status, headers=fields, reason=reason)


async def _next_request(exchange: Exchange) -> tuple[h11.Request, bytes] | None:
    """Read one whole request (head and body); None when the client closed cleanly."""
    conn = exchange.conn
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await exchange.reader.read(_READ_SIZE)
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
