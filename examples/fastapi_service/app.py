"""The HTTP service: ``POST /tickets`` runs one ticket through the pipeline and answers.

Run it with ``uvicorn examples.fastapi_service.app:app`` (``pip install
'streamflow-ai[web]'``). The pipeline runs inside the service's own event loop
for as long as the app lives (``streamflow.open`` in the lifespan). When the
pipeline already holds ``window`` tickets, a new one is refused at once with
503 and a ``Retry-After`` header instead of queueing without bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import streamflow
from examples.fastapi_service.pipeline import Ticket, build_pipeline
from streamflow import EventFailed, EventFiltered, EventParked, FlowFull, Pipeline
from streamflow.metrics import CollectorRegistry, PipelineMetrics

__all__ = ["app", "create_app"]


def create_app(pipeline: Pipeline | None = None, *, window: int | None = None) -> FastAPI:
    """Build the service around ``pipeline`` (default: the example's).

    Args:
        pipeline: the pipeline to run; its input model is what ``POST /tickets`` takes.
        window: the most tickets inside the pipeline at once (default: the pipeline's).

    Returns:
        The FastAPI application.
    """
    pipeline = pipeline or build_pipeline()
    registry = CollectorRegistry()
    # Registered once per app: its lifespan may run again (a test client, a reload).
    metrics = PipelineMetrics(registry, pipeline.name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with streamflow.open(pipeline, window=window, metrics=metrics) as flow:
            app.state.flow = flow
            yield
        # Leaving the block let every ticket still inside finish.

    app = FastAPI(title="ticket service", lifespan=lifespan)

    @app.post("/tickets")
    async def answer_ticket(ticket: Ticket, request: Request) -> Any:
        flow: streamflow.Flow = request.app.state.flow
        try:
            return await flow.process(ticket, wait=False)
        except FlowFull as full:
            return JSONResponse(
                {"detail": "busy: too many tickets in flight, retry later"},
                status_code=503,
                headers={"Retry-After": str(int(full.retry_after or 1))},
            )
        except EventParked as parked:
            return JSONResponse(
                {"status": "parked for review", "reason": parked.reason}, status_code=202
            )
        except EventFiltered:
            return JSONResponse({"status": "not answered: filtered out"}, status_code=200)
        except EventFailed as failed:
            letter = failed.dead_letter
            return JSONResponse(
                {
                    "detail": "the pipeline could not answer",
                    "stage": letter.stage,
                    "error": letter.error.type,
                    "attempts": letter.attempts,
                },
                status_code=500,
            )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, int]:
        flow: streamflow.Flow = request.app.state.flow
        return {"in_flight": flow.in_flight, "window": flow.window}

    return app


app = create_app()
