"""The /metrics server: local by default, and calm under requests it did not expect."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from streamflow.metrics import CollectorRegistry, PipelineMetrics, open_metrics_server


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        return b""  # the server may close before the client has sent everything
    finally:
        writer.close()


async def test_metrics_bind_only_the_loopback_interface_unless_a_host_is_given() -> None:
    registry = CollectorRegistry()
    async with open_metrics_server(registry, 0) as server:
        assert server._server.sockets[0].getsockname()[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}"
    async with open_metrics_server(registry, 0, host="0.0.0.0") as server:
        assert server._server.sockets[0].getsockname()[0] == "0.0.0.0"
        assert server.url == f"http://0.0.0.0:{server.port}"


@pytest.fixture
async def unhandled(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """Exceptions the event loop would log as unhandled (a traceback in the worker's log)."""
    found: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: found.append(ctx))
    caplog.set_level(logging.DEBUG)
    return found


async def _still_serves(port: int) -> None:
    answer = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"streamflow_events_total" in answer


async def test_a_header_over_64_kib_is_refused_without_a_traceback(
    unhandled: list[dict[str, object]], caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    PipelineMetrics(registry, "p").stage("s").ok += 1
    async with open_metrics_server(registry, 0) as server:
        huge = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
        answer = await _exchange(server.port, huge)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
        await _still_serves(server.port)
    assert unhandled == []
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_malformed_requests_get_400_or_a_close_and_no_traceback(
    unhandled: list[dict[str, object]], caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    PipelineMetrics(registry, "p").stage("s").ok += 1
    async with open_metrics_server(registry, 0) as server:
        assert (await _exchange(server.port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert await _exchange(server.port, b"GET /metr") == b""  # half a request, then EOF
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(b"\xff\xfe\x00garbage\r\n\r\n")
        await _still_serves(server.port)
    assert unhandled == []
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
