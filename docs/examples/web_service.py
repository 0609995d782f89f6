"""A web service around a pipeline: streamflow.open in FastAPI's lifespan, 503 when full.

Run it with ``uvicorn docs.examples.web_service:app`` (``pip install 'streamflow-ai[web]'``).
The fuller example, with every outcome mapped to a status, is examples/fastapi_service/.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import streamflow
from streamflow import EventFailed, FlowFull, Pipeline, Stage, map_async


class Ticket(BaseModel):
    id: str
    customer: str
    text: str


class Reply(BaseModel):
    id: str
    reply: str


async def draft_reply(t: Ticket) -> Reply:
    return Reply(id=t.id, reply=f"Hi {t.customer}, we read: {t.text}")


pipeline = Pipeline("web", [Stage("draft", map_async(draft_reply))], input_model=Ticket, window=64)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The pipeline runs in the service's own event loop for as long as the app lives.
    async with streamflow.open(pipeline) as flow:
        app.state.flow = flow
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/tickets")
async def answer_ticket(ticket: Ticket, request: Request) -> Any:
    flow: streamflow.Flow = request.app.state.flow
    try:
        return await flow.process(ticket, wait=False)
    except FlowFull as full:
        # The window is full: refuse at once instead of queueing without bound.
        return JSONResponse(
            {"detail": "busy"},
            status_code=503,
            headers={"Retry-After": str(int(full.retry_after or 1))},
        )
    except EventFailed as failed:
        return JSONResponse({"detail": failed.dead_letter.error.message}, status_code=500)
