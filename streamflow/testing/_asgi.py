"""Serving an ASGI application with uvicorn inside a running event loop, for tests.

uvicorn's own ``run`` owns the process (signals, its loop); a test server
shares the test's loop instead, starts on a socket bound before it returns
(so the port is known), and stops without waiting for clients that hold
requests open.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp

__all__ = ["ABANDONED", "UvicornServer", "sleep_unless_gone"]

ABANDONED = 499
"""Status recorded for a request whose client closed the connection first (as nginx does)."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test (or the CLI around it) owns SIGINT/SIGTERM, not the fake endpoint.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class UvicornServer:
    """One ASGI app served on ``host:port`` from the current event loop."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        """Prepare the server (nothing listens until :meth:`start`).

        Args:
            app: the ASGI application.
            host: the address to bind (127.0.0.1 for tests).
            port: the port, 0 for a free one.
        """
        self.app = app
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind, start serving, and return the bound port.

        Raises:
            OSError: the address cannot be bound (a port in use, say).
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        ready = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self._task.result()  # startup failed: raise its error
            raise OSError(f"the test server on {self.host}:{self.port} did not start")
        return self.port

    async def stop(self) -> None:
        """Stop listening, cut open requests short and close every connection."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        server.force_exit = True
        # Held requests (hangs, slow answers) would keep uvicorn's shutdown waiting.
        for pending in list(server.server_state.tasks):
            pending.cancel()
        for connection in list(server.server_state.connections):
            transport: Any = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._server = self._task = None


async def sleep_unless_gone(request: Request, seconds: float) -> bool:
    """Wait ``seconds``, or less if the client disconnects first.

    Returns:
        True when the client went away during the wait.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return bool(done)
    finally:
        watcher.cancel()
