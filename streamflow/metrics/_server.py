"""A small HTTP server for /metrics and /healthz on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamflow.errors import ConfigError

__all__ = ["Health", "MetricsServer", "open_metrics_server"]

Health = Callable[[], tuple[bool, str]]


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text format) and ``/healthz`` (200 or 503)."""

    def __init__(self, server: asyncio.Server, port: int) -> None:
        self._server = server
        self.port = port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:9100``."""
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def open_metrics_server(
    registry: CollectorRegistry,
    port: int,
    *,
    host: str = "0.0.0.0",
    health: Health | None = None,
) -> AsyncIterator[MetricsServer]:
    """Serve metrics on ``host:port`` while the context is open.

    Args:
        registry: the registry to expose.
        port: TCP port; 0 picks a free one.
        host: interface to bind.
        health: returns (healthy, reason) for /healthz; always healthy if None.

    Raises:
        ConfigError: the port cannot be bound (names the port).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            path = request.split(b" ", 2)[1].decode("latin-1") if b" " in request else "/"
            path = path.split("?", 1)[0]
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
            elif path == "/healthz":
                ok, reason = health() if health is not None else (True, "ok")
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain; charset=utf-8", (reason + "\n").encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on port {port}: {exc.strerror}; pick another --metrics-port"
        ) from exc
    bound = server.sockets[0].getsockname()[1]
    try:
        yield MetricsServer(server, bound)
    finally:
        server.close()
        await server.wait_closed()
