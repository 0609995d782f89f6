"""A small HTTP server for /metrics, /healthz and /readyz on the event loop.

It binds 127.0.0.1 unless told otherwise: metrics name pipelines, stages and
models, which is nobody's business outside the machine until someone decides
so (``--metrics-host 0.0.0.0`` in a container).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamflow.errors import ConfigError

__all__ = ["DEFAULT_HOST", "Health", "MetricsServer", "open_metrics_server"]

DEFAULT_HOST = "127.0.0.1"
"""The interface metrics are served on unless a host is given."""

# A request head larger than this is refused (431) instead of read; it is far
# above what Prometheus or curl sends.
_MAX_HEAD = 16 * 1024

Health = Callable[[], tuple[bool, str]]


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz`` (200 or 503)."""

    def __init__(self, server: asyncio.Server, port: int, host: str = DEFAULT_HOST) -> None:
        self._server = server
        self.port = port
        self.host = host

    @property
    def url(self) -> str:
        """The base URL on the interface it listens on, e.g. ``http://127.0.0.1:9100``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def open_metrics_server(
    registry: CollectorRegistry,
    port: int,
    *,
    host: str = DEFAULT_HOST,
    health: Health | None = None,
    ready: Health | None = None,
) -> AsyncIterator[MetricsServer]:
    """Serve metrics on ``host:port`` while the context is open.

    Args:
        registry: the registry to expose.
        port: TCP port; 0 picks a free one.
        host: interface to bind (``0.0.0.0`` for every IPv4 interface).
        health: returns (healthy, reason) for /healthz (liveness); always healthy if None.
        ready: returns (ready, reason) for /readyz (readiness); ``health`` if None.

    Raises:
        ConfigError: the port cannot be bound (names the port).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except asyncio.LimitOverrunError:
                request = None
            parts = request.split(b" ", 2) if request is not None else []
            if request is None:
                status, ctype, body = "431 Request Header Fields Too Large", "text/plain", b""
            elif len(parts) != 3:
                status, ctype, body = "400 Bad Request", "text/plain", b""
            elif (path := parts[1].decode("latin-1").split("?", 1)[0]) == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
            elif path in ("/healthz", "/readyz"):
                probe = ready or health if path == "/readyz" else health
                ok, reason = probe() if probe is not None else (True, "ok")
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain; charset=utf-8", (reason + "\n").encode()
            else:
                status, ctype, body = (
                    "404 Not Found",
                    "text/plain",
                    b"try /metrics, /healthz or /readyz\n",
                )
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror}; "
            "pick another --metrics-port or --metrics-host"
        ) from exc
    bound = server.sockets[0].getsockname()[1]
    try:
        yield MetricsServer(server, bound, host)
    finally:
        server.close()
        await server.wait_closed()
