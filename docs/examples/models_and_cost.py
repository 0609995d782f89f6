"""A model-backed classify step on an OpenAI-compatible endpoint: limits, prices, cost.

The endpoint here is streamflow.testing's local server on 127.0.0.1 (the ``testing``
extra), so the example runs without an account; with a real one, drop the server and let
``ModelEndpoint.from_env()`` read ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel

from operators import classify
from operators.models import CallPolicy, LLMClassifier, ModelClient, ModelEndpoint, PriceTable
from streamflow import Event, Pipeline, RetryPolicy, Stage, run_flow, shared_limiter
from streamflow.testing import open_openai_server
from streamflow.transports import AsyncIterableSource, CollectingSink

CHAT_MODEL = "gpt-4o-mini"
LABELS = ["billing", "shipping", "account_access"]


class Ticket(BaseModel):
    id: str
    text: str


def build_pipeline(client: ModelClient) -> Pipeline:
    # One budget for every step that calls this endpoint (per process, or shared by every
    # process through Redis when STREAMFLOW_LIMITER_URL names one).
    limiter = shared_limiter(
        f"{client.url}:{CHAT_MODEL}", requests_per_min=600, tokens_per_min=200_000
    )
    # 429s and 5xx are retried (Retry-After honoured); each attempt waits on the limiter.
    policy = CallPolicy(limiter=limiter, retry=RetryPolicy(max_attempts=3, base_delay=0.05))
    labeller = LLMClassifier(client, CHAT_MODEL, LABELS, policy=policy)
    return Pipeline(
        "priced",
        [Stage("classify", classify(labeller, text_fields=["text"], review_below=0))],
        input_model=Ticket,
    )


async def tickets() -> AsyncIterator[Ticket]:
    for i, text in enumerate(["my card was charged twice", "where is my parcel"]):
        yield Ticket(id=f"t{i + 1}", text=text)


async def main() -> list[Event]:
    """Classify two tickets on the local server; return the finished events."""
    # USD per million tokens, input/output (STREAMFLOW_MODEL_PRICES does the same).
    prices = PriceTable({CHAT_MODEL: (0.15, 0.60)})
    async with open_openai_server() as server:
        endpoint = ModelEndpoint(base_url=server.base_url, api_key="sk-local")
        async with ModelClient(endpoint, prices=prices) as client:
            sink = CollectingSink()
            report = await run_flow(build_pipeline(client), AsyncIterableSource(tickets()), sink)
            assert report.error is None
    return sink.events


if __name__ == "__main__":
    for event in asyncio.run(main()):
        record = event.trace[-1]
        label = event.payload.get("classification", {}).get("label")
        print(event.id, label, record.model, record.tokens_in, record.tokens_out, record.cost_usd)
