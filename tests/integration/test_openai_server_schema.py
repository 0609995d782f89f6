"""The test server follows the request: structured output fits the JSON schema asked for.

Requests go over plain httpx, so these tests pin the server's side of the wire
whatever the client does.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel, Field

from streamflow.testing import Fault, open_openai_server

MODEL = "streamflow-test"


class Address(BaseModel):
    city: str
    postcode: str = Field(min_length=4, max_length=8)


class Item(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=5)


class Order(BaseModel):
    priority: Literal["low", "high", "urgent"]
    refund: bool
    total: float = Field(gt=0, lt=100)
    address: Address
    items: list[Item] = Field(min_length=2)
    note: str | None = None


def _schema_format(model: type[BaseModel]) -> dict[str, object]:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


async def _chat(base_url: str, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        return await http.post("/chat/completions", json=body)


async def test_json_schema_request_gets_an_answer_that_validates() -> None:
    async with open_openai_server() as server:
        response = await _chat(
            server.base_url,
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Where is my order?"}],
                "response_format": _schema_format(Order),
            },
        )
    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    order = Order.model_validate_json(content)  # required, enum, types, nested, arrays, bounds
    assert len(order.items) >= 2 and order.priority in ("low", "high", "urgent")
    assert set(json.loads(content)) == set(Order.model_fields)


async def test_enum_is_chosen_by_the_words_its_prompt_description_shares_with_the_ticket() -> None:
    class Answer(BaseModel):
        label: Literal["billing", "shipping", "privacy"]

    system = (
        "Choose exactly one label from this list:\n"
        "- billing: invoices, charges, refunds\n"
        "- shipping: deliveries, tracking, parcels\n"
        "- privacy: personal data, GDPR"
    )
    async with open_openai_server() as server:
        labels = []
        for ticket in ("my parcel tracking is stuck", "please delete my personal data"):
            response = await _chat(
                server.base_url,
                {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": ticket},
                    ],
                    "response_format": _schema_format(Answer),
                },
            )
            labels.append(
                Answer.model_validate_json(
                    response.json()["choices"][0]["message"]["content"]
                ).label
            )
    assert labels == ["shipping", "privacy"]


async def test_json_mode_follows_the_schema_quoted_in_the_prompt() -> None:
    schema = json.dumps(Order.model_json_schema())
    async with open_openai_server() as server:
        response = await _chat(
            server.base_url,
            {
                "model": MODEL,
                "messages": [
                    {
                        "role": "system",
                        "content": f"Answer with JSON matching this JSON schema: {schema}",
                    },
                    {"role": "user", "content": "Refund my order"},
                ],
                "response_format": {"type": "json_object"},
            },
        )
    Order.model_validate_json(response.json()["choices"][0]["message"]["content"])


async def test_invalid_json_fault_is_billed_and_does_not_parse() -> None:
    async with open_openai_server(invalid_json_rate=1.0) as server:
        response = await _chat(
            server.base_url,
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Where is my order?"}],
                "response_format": _schema_format(Order),
            },
        )
        served = server.requests
    body = response.json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(body["choices"][0]["message"]["content"])
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    assert served[0].invalid_json
    assert served[0].prompt_tokens == body["usage"]["prompt_tokens"]


async def test_hang_fault_holds_the_request_until_the_client_gives_up() -> None:
    async with open_openai_server() as server:
        server.inject_fault(Fault(hang_s=30))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(
                    "/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                )
        served = await server.wait_for(lambda rows: len(rows) == 1, timeout=10)
    assert served[0].abandoned and served[0].prompt_tokens == 0
