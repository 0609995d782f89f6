"""The FastAPI example, served by uvicorn on a free port and called over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.fastapi_service.app import create_app  # noqa: E402
from examples.fastapi_service.pipeline import Routed, Ticket, build_pipeline  # noqa: E402
from streamflow import Pipeline, Stage, map_async  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _serve(app: object) -> AsyncIterator[str]:
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def test_a_posted_ticket_is_answered_by_the_pipeline() -> None:
    async with (
        _serve(create_app(build_pipeline())) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        answer = await client.post(
            "/tickets", json={"id": "t1", "customer": "ada", "text": "my invoice is wrong"}
        )
        assert answer.status_code == 200
        assert answer.json() == {
            "id": "t1",
            "team": "billing",
            "answer": "Thanks ada, the billing team has your ticket t1.",
        }
        invalid = await client.post("/tickets", json={"id": "t2"})
        assert invalid.status_code == 422  # FastAPI checks the body against Ticket


async def test_a_full_window_answers_503_with_retry_after_and_the_rest_are_answered() -> None:
    gate = asyncio.Event()
    entered = 0

    async def held(ticket: Ticket) -> Routed:
        nonlocal entered
        entered += 1
        await gate.wait()
        return Routed(**ticket.model_dump(), team="support")

    async def failing(ticket: Routed) -> Routed:
        if ticket.text == "crash":
            raise RuntimeError("the model is down")
        return ticket

    pipeline = Pipeline(
        "held",
        [Stage("route", map_async(held, concurrency=8)), Stage("check", map_async(failing))],
        input_model=Ticket,
    )
    async with (
        _serve(create_app(pipeline, window=2)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        first = [
            asyncio.create_task(
                client.post("/tickets", json={"id": f"w{i}", "customer": "c", "text": "hi"})
            )
            for i in range(2)
        ]
        async with asyncio.timeout(10):
            while entered < 2:
                await asyncio.sleep(0.01)
        busy = await client.post("/tickets", json={"id": "w2", "customer": "c", "text": "hi"})
        assert busy.status_code == 503
        assert int(busy.headers["retry-after"]) >= 1
        gate.set()
        answered = await asyncio.gather(*first)
        assert [r.status_code for r in answered] == [200, 200]
        assert sorted(r.json()["id"] for r in answered) == ["w0", "w1"]
        crash = await client.post("/tickets", json={"id": "w3", "customer": "c", "text": "crash"})
        assert crash.status_code == 500
        assert crash.json()["stage"] == "check" and crash.json()["error"] == "RuntimeError"
        health = await client.get("/healthz")
        assert health.json() == {"in_flight": 0, "window": 2}


async def test_the_app_serves_again_after_a_restart_and_exposes_its_metrics() -> None:
    app = create_app(build_pipeline())
    ticket = {"id": "t1", "customer": "c1", "text": "my invoice is wrong"}
    for _ in range(2):  # one app, started twice (a test client, a reload)
        async with _serve(app) as base, httpx.AsyncClient(base_url=base) as client:
            answer = await client.post("/tickets", json=ticket)
            assert answer.status_code == 200
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "streamflow_events_total" in metrics.text
