"""The model client against the local OpenAI-wire-format server, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from operators.models._llm_calls import call_model
from operators.models.llm import CallPolicy
from operators.models.openai import (
    ModelClient,
    ModelEndpoint,
    ModelOutputInvalid,
    RequestInfo,
)
from operators.models.pricing import PriceTable
from streamflow.errors import RateLimited, StepFailed, StepTimeout, StreamflowError, Unavailable
from streamflow.events import Event, encode_event, loads
from streamflow.ops import RetryPolicy
from streamflow.ops._map_async import run_step
from streamflow.testing import (
    Fault,
    OpenAIServer,
    count_tokens,
    open_openai_server,
    serve_openai_in_thread,
)

SECRET = "sk-live-do-not-leak-7f3a9c"
MODEL = "gpt-4o-mini"


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    async with open_openai_server() as running:
        yield running


def _client(
    server: OpenAIServer, *, seen: list[RequestInfo] | None = None, **endpoint: Any
) -> ModelClient:
    hook = seen.append if seen is not None else None
    return ModelClient(
        ModelEndpoint(base_url=server.base_url, **endpoint),
        prices=PriceTable({MODEL: (1.0, 2.0)}),
        on_request=hook,
    )


# -- chat, streaming, embeddings -------------------------------------------------------


async def test_chat_answers_from_the_prompt_with_usage_and_cost(server: OpenAIServer) -> None:
    seen: list[RequestInfo] = []
    async with _client(server, seen=seen) as client:
        result = await client.chat(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why blue?"}],
            model=MODEL,
        )
    assert "Why blue?" in result.content
    assert result.finish_reason == "stop"
    assert result.usage.tokens_in == count_tokens("Be brief.") + count_tokens("Why blue?")
    assert result.usage.tokens_out == count_tokens(result.content)
    expected = (result.usage.tokens_in * 1.0 + result.usage.tokens_out * 2.0) / 1e6
    assert result.usage.cost_usd == pytest.approx(expected)
    assert result.usage.latency_s > 0
    assert [(i.model, i.status, i.http_status) for i in seen] == [(MODEL, "ok", 200)]
    assert seen[0].cost_usd == pytest.approx(expected)


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(server: OpenAIServer) -> None:
    async with _client(server) as client:
        result = await client.chat("Tell me everything", model=MODEL, max_tokens=3)
    assert result.finish_reason == "length"
    assert result.usage.tokens_out == 3


async def test_stream_yields_deltas_that_join_to_the_answer_with_usage(
    server: OpenAIServer,
) -> None:
    async with _client(server) as client:
        plain = await client.chat("Stream me a reply", model=MODEL)
        async with client.chat_stream("Stream me a reply", model=MODEL) as stream:
            deltas = [delta async for delta in stream]
    assert len(deltas) > 3
    assert "".join(deltas) == plain.content == stream.content
    assert stream.finish_reason == "stop"
    assert stream.usage is not None
    assert (stream.usage.tokens_in, stream.usage.tokens_out) == (
        plain.usage.tokens_in,
        plain.usage.tokens_out,
    )
    assert stream.usage.cost_usd == pytest.approx(plain.usage.cost_usd)
    assert server.requests[-1].stream is True


async def test_stream_without_usage_option_still_yields_text(server: OpenAIServer) -> None:
    async with _client(server, stream_usage=False) as client:
        text = await client.chat_stream("Hello", model=MODEL).text()
    assert "Hello" in text
    assert server.requests[-1].completion_tokens == count_tokens(text)


async def test_stream_closed_early_releases_the_connection(server: OpenAIServer) -> None:
    server.chunk_delay = 0.05
    async with _client(server) as client:
        async with client.chat_stream("a long answer please", model=MODEL) as stream:
            first = await anext(stream)
        assert first
        # The pool still works after an abandoned stream.
        result = await client.chat("again", model=MODEL)
    assert "again" in result.content
    await server.wait_for(lambda reqs: any(r.abandoned for r in reqs))


async def test_embeddings_are_deterministic_unit_vectors(server: OpenAIServer) -> None:
    texts = ["refund my order", "refund my order please", "the weather is nice"]
    async with _client(server) as client:
        first = await client.embed(texts, model="text-embedding-3-small")
        again = await client.embed(texts[:1], model="text-embedding-3-small")
        short = await client.embed(texts[:1], model="text-embedding-3-small", dimensions=8)
        empty = await client.embed([], model="text-embedding-3-small")
    assert len(first) == 3 and all(len(v) == 64 for v in first)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in first)
    assert again[0] == first[0]
    assert len(short[0]) == 8

    def cosine(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(first[0], first[1]) > cosine(first[0], first[2])
    assert first.usage.tokens_in == sum(count_tokens(t) for t in texts)
    assert len(empty) == 0 and server.count(path="/v1/embeddings") == 3


async def test_list_models_names_what_the_server_serves(server: OpenAIServer) -> None:
    async with _client(server) as client:
        assert await client.list_models() == list(server.models)


# -- structured output ---------------------------------------------------------------------


class Triage(BaseModel):
    label: str
    urgent: bool


async def test_structured_output_sends_the_models_json_schema_and_validates_the_answer() -> None:
    asked: list[dict[str, Any]] = []

    def reply(request: dict[str, Any]) -> str:
        asked.append(request["response_format"])
        return '{"label": "billing", "urgent": true}'

    async with open_openai_server(reply=reply) as server, _client(server) as client:
        result = await client.chat("My card was charged twice", model=MODEL, response_model=Triage)
    assert result.parsed == Triage(label="billing", urgent=True)
    assert asked[0]["type"] == "json_schema"
    schema = asked[0]["json_schema"]["schema"]
    assert schema["required"] == ["label", "urgent"] and schema["additionalProperties"] is False


async def test_json_mode_sends_the_schema_in_the_prompt() -> None:
    asked: list[dict[str, Any]] = []

    def reply(request: dict[str, Any]) -> str:
        asked.append(request)
        return '{"label": "billing", "urgent": false}'

    async with (
        open_openai_server(reply=reply) as server,
        _client(server, structured_output="json_object") as client,
    ):
        result = await client.chat("Charged twice", model=MODEL, response_model=Triage)
    assert result.parsed == Triage(label="billing", urgent=False)
    assert asked[0]["response_format"] == {"type": "json_object"}
    assert '"urgent"' in asked[0]["messages"][0]["content"]


async def test_a_server_that_refuses_json_schema_gets_json_mode_from_then_on() -> None:
    def reply(request: dict[str, Any]) -> str:
        if request["response_format"]["type"] == "json_schema":
            raise ValueError("unused")
        return '{"label": "shipping", "urgent": true}'

    async with open_openai_server(reply=reply) as server, _client(server) as client:
        server.inject_fault(Fault(400, message="response_format json_schema is not supported"))
        first = await client.chat("Where is it?", model=MODEL, response_model=Triage)
        second = await client.chat("Where is it?", model=MODEL, response_model=Triage)
    assert first.parsed == second.parsed == Triage(label="shipping", urgent=True)
    assert [r.status for r in server.requests] == [400, 200, 200]


async def test_structured_output_that_is_not_json_fails_the_step() -> None:
    async with (
        open_openai_server(reply=lambda _: "Sure! It is billing.") as server,
        _client(server) as client,
    ):
        with pytest.raises(ModelOutputInvalid) as caught:
            await client.chat("My card was charged twice", model=MODEL, response_model=Triage)
    assert isinstance(caught.value, StepFailed) and not caught.value.retriable
    assert "Triage" in str(caught.value) and caught.value.content == "Sure! It is billing."


# -- errors --------------------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after(server: OpenAIServer) -> None:
    seen: list[RequestInfo] = []
    server.inject_fault(Fault(429, retry_after=2.5))
    async with _client(server, seen=seen) as client:
        with pytest.raises(RateLimited) as caught:
            await client.chat("hi", model=MODEL)
    assert caught.value.retry_after == pytest.approx(2.5)
    assert caught.value.retriable
    assert [i.status for i in seen] == ["429"]
    assert server.count(status=429) == 1


async def test_429_with_an_http_date_retry_after(server: OpenAIServer) -> None:
    date = email.utils.formatdate(time.time() + 60, usegmt=True)
    server.inject_fault(Fault(429, retry_after_header=date))
    async with _client(server) as client:
        with pytest.raises(RateLimited) as caught:
            await client.chat("hi", model=MODEL)
    assert caught.value.retry_after is not None
    assert 55 <= caught.value.retry_after <= 61


async def test_capacity_above_requests_per_second_answers_429() -> None:
    async with open_openai_server(capacity_rps=3) as server, _client(server) as client:
        outcomes = await asyncio.gather(
            *(client.chat(f"q{i}", model=MODEL) for i in range(6)), return_exceptions=True
        )
    limited = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(limited) == 3
    assert all(o.retry_after is not None and 0 < o.retry_after <= 1 for o in limited)
    assert server.count(status=200) == 3


async def test_5xx_is_unavailable_and_retriable(server: OpenAIServer) -> None:
    server.inject_fault(Fault(503, message="overloaded"))
    async with _client(server) as client:
        with pytest.raises(Unavailable, match="503") as caught:
            await client.chat("hi", model=MODEL)
    assert caught.value.retriable and "overloaded" in str(caught.value)


async def test_bad_request_is_a_step_failure_not_retried(server: OpenAIServer) -> None:
    seen: list[RequestInfo] = []
    async with _client(server, seen=seen) as client:
        with pytest.raises(StepFailed, match="400") as caught:
            await client.chat([{"content": "a message without a role"}], model=MODEL)
    assert not caught.value.retriable
    assert [i.status for i in seen] == ["4xx"]


async def test_slow_server_times_out_and_the_server_sees_the_request_abandoned() -> None:
    seen: list[RequestInfo] = []
    async with open_openai_server(latency=30.0) as server:
        async with _client(server, seen=seen, timeout_s=0.2) as client:
            started = time.monotonic()
            with pytest.raises(StepTimeout):
                await client.chat("hi", model=MODEL)
            assert time.monotonic() - started < 5
        served = await server.wait_for(lambda reqs: len(reqs) == 1)
    assert served[0].abandoned and served[0].status == 499
    assert served[0].completion_tokens == 0
    assert [i.status for i in seen] == ["timeout"]


async def test_step_timeout_from_map_async_cancels_the_call_and_counts_it() -> None:
    seen: list[RequestInfo] = []
    async with open_openai_server(latency=30.0) as server, _client(server, seen=seen) as client:

        async def generate(event: Event) -> Event:
            result = await client.chat(str(event.payload), model=MODEL)
            return event.traced(result.usage.to_record("generate"))

        out = await run_step(generate, Event(payload="hi"), step="generate", timeout=0.2)
        await server.wait_for(lambda reqs: len(reqs) == 1 and reqs[0].abandoned)
    assert out.outcome == "failed" and out.error is not None
    assert out.error.type == "StepTimeout"
    assert [i.status for i in seen] == ["timeout"]


async def test_a_failing_reply_function_answers_500() -> None:
    def reply(request: dict[str, Any]) -> str:
        raise ValueError("no canned answer")

    async with open_openai_server(reply=reply) as server, _client(server) as client:
        with pytest.raises(Unavailable, match="no canned answer"):
            await client.chat("hi", model=MODEL)


async def test_unreachable_endpoint_is_unavailable() -> None:
    async with open_openai_server() as server:
        url = server.base_url
    async with ModelClient(ModelEndpoint(base_url=url)) as client:
        with pytest.raises(Unavailable, match="unreachable"):
            await client.chat("hi", model=MODEL)


async def test_call_policy_honours_retry_after_then_succeeds(server: OpenAIServer) -> None:
    seen: list[RequestInfo] = []
    server.inject_fault(Fault(429, retry_after=0.05), times=2)
    client = ModelClient(ModelEndpoint(base_url=server.base_url), on_request=seen.append)
    policy = CallPolicy(retry=RetryPolicy(max_attempts=3, base_delay=0.0, jitter=0.0))
    async with client:
        started = time.monotonic()
        result = await call_model(
            lambda: client.chat("hi", model=MODEL), lambda r: r.usage, policy=policy
        )
    assert time.monotonic() - started >= 0.1
    assert "hi" in result.content
    assert [i.status for i in seen] == ["429", "429", "ok"]
    assert server.count() == 3


async def test_closed_client_refuses_calls(server: OpenAIServer) -> None:
    client = _client(server)
    await client.aclose()
    with pytest.raises(Exception, match="closed"):
        await client.chat("hi", model=MODEL)


# -- the key never leaks -------------------------------------------------------------------


def _all_text(exc: BaseException) -> str:
    parts = []
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


async def test_api_key_is_sent_but_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_openai_server(api_key=SECRET, echo_headers_in_errors=True) as server:
        endpoint = ModelEndpoint(base_url=server.base_url, api_key=SECRET)
        async with ModelClient(endpoint) as client:
            ok = await client.chat("hi", model=MODEL)
            server.inject_fault(Fault(500))
            with pytest.raises(Unavailable) as on_500:
                await client.chat("hi", model=MODEL)
            wrong_key = ModelEndpoint(base_url=server.base_url, api_key="sk-wrong")
            async with ModelClient(wrong_key) as bad:
                with pytest.raises(StepFailed, match="401") as on_401:
                    await bad.chat("hi", model=MODEL)
            text = [repr(client), repr(endpoint), str(endpoint), repr(ok)]
    # The server really echoed the header: the test would catch a leak.
    assert "request headers" in str(on_500.value)
    assert "[redacted]" in str(on_500.value)
    failed = Event(payload="hi").failed(on_500.value, "generate")
    text += [_all_text(on_500.value), _all_text(on_401.value), encode_event(failed).decode()]
    text.append(caplog.text)
    for shown in text:
        assert SECRET not in shown
        assert "sk-wrong" not in shown


# -- both sides of the wire agree ----------------------------------------------------------


async def test_server_counts_equal_client_sums_under_faults() -> None:
    seen: list[RequestInfo] = []
    async with open_openai_server(error_rate=0.2, rate_limit_rate=0.2, seed=7) as server:
        async with _client(server, seen=seen) as client:

            async def one(i: int) -> None:
                if i % 3 == 0:
                    await client.embed([f"text {i}", "more"], model="text-embedding-3-small")
                elif i % 3 == 1:
                    await client.chat_stream(f"question {i}", model=MODEL).text()
                else:
                    await client.chat(f"question {i}", model=MODEL)

            outcomes = await asyncio.gather(*(one(i) for i in range(60)), return_exceptions=True)
        served = server.requests
    failures = Counter(type(o).__name__ for o in outcomes if isinstance(o, BaseException))
    assert set(failures) <= {"RateLimited", "Unavailable"}
    assert failures["RateLimited"] > 0 and failures["Unavailable"] > 0
    assert len(served) == len(seen) == 60
    statuses = Counter({200: "ok", 429: "429", 500: "5xx"}[r.status] for r in served)
    assert statuses == Counter(i.status for i in seen)
    assert sum(r.prompt_tokens for r in served) == sum(i.tokens_in for i in seen) > 0
    assert sum(r.completion_tokens for r in served) == sum(i.tokens_out for i in seen) > 0
    stats = client.statistics()
    assert (stats.tokens_in, stats.tokens_out) == server.usage_totals()
    priced = [i.cost_usd for i in seen if i.cost_usd is not None]
    assert stats.cost_usd == pytest.approx(math.fsum(priced))
    # The client's table has no price for the embedding model: unknown, not 0.
    assert stats.unpriced == {"text-embedding-3-small"}
    assert server.peak_rate() >= 1


async def test_trace_record_from_a_step_carries_model_tokens_and_cost(
    server: OpenAIServer,
) -> None:
    async with _client(server) as client:

        async def generate(event: Event) -> Event:
            result = await client.chat(str(event.payload), model=MODEL)
            return event.with_payload(result.content).traced(result.usage.to_record("generate"))

        out = await run_step(generate, Event(payload="Where is my parcel?"), step="generate")
    record = out.trace[-1]
    served = server.requests[-1]
    assert (record.step, record.model) == ("generate", MODEL)
    assert (record.tokens_in, record.tokens_out) == (served.prompt_tokens, served.completion_tokens)
    assert record.cost_usd > 0 and record.attempt == 1


# -- the server on its own ---------------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection(
    server: OpenAIServer,
) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for _ in range(2):
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            body = await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
            assert loads(body)["object"] == "list"
    finally:
        writer.close()
        await writer.wait_closed()
    assert server.count(path="/v1/models") == 2


async def test_unknown_path_and_bad_json_get_openai_style_errors(server: OpenAIServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        missing = await http.get("/nothing")
        bad_json = await http.post("/chat/completions", content=b"{not json")
        wrong_method = await http.get("/chat/completions")
    assert missing.status_code == 404 and "error" in missing.json()
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    assert wrong_method.status_code == 405


def test_server_runs_in_a_thread_for_sync_code() -> None:
    with serve_openai_in_thread(latency=0.0) as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "sync hello"}]},
        )
        assert response.status_code == 200
        assert "sync hello" in response.json()["choices"][0]["message"]["content"]
        # The server logs a request once its response has gone out, on its own thread.
        deadline = time.monotonic() + 5
        while server.count(status=200) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.count(status=200) == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/models")


def test_server_runs_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streamflow.testing.openai_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:")
        models = httpx.get(f"{base_url}/models").json()
        assert [m["id"] for m in models["data"]] == ["streamflow-test", "streamflow-embed"]
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_2xx_whose_body_is_unusable_counts_as_an_error_attempt() -> None:
    import httpx2
    import openai

    seen: list[RequestInfo] = []
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, content=b"<html>ok</html>", headers={"content-type": "application/json"}
        )
    )
    sdk = openai.AsyncOpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test",
        http_client=httpx2.AsyncClient(transport=transport),
    )
    async with ModelClient(openai_client=sdk, on_request=seen.append) as client:
        with pytest.raises(StreamflowError, match="chat completion"):
            await client.chat("hi", model=MODEL)
    assert [(i.status, i.http_status) for i in seen] == [("error", 200)]


async def test_a_users_own_sdk_client_is_used_without_its_retries(server: OpenAIServer) -> None:
    import openai

    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-user", max_retries=5)
    server.inject_fault(Fault(500))
    async with ModelClient(openai_client=sdk) as client:
        with pytest.raises(Unavailable):
            await client.chat("hi", model=MODEL)
        assert (await client.chat("hi", model=MODEL)).content
    assert [r.status for r in server.requests] == [500, 200]
    assert not sdk.is_closed()  # its owner closes it
    await sdk.close()


async def test_credentials_in_the_base_url_never_reach_errors_dead_letters_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_openai_server(echo_headers_in_errors=True) as server:
        base = server.base_url.replace("http://", "http://alice:pw-0f9e8d7c@")
        endpoint = ModelEndpoint(base_url=base, api_key=SECRET)
        async with ModelClient(endpoint) as client:
            server.inject_fault(Fault(500))
            with pytest.raises(Unavailable) as caught:
                await client.chat("hi", model=MODEL)
    assert "request headers" in str(caught.value)  # the server echoed what it got
    failed = Event(payload="hi").failed(caught.value, "generate")
    shown = [_all_text(caught.value), encode_event(failed).decode(), repr(endpoint), caplog.text]
    assert "HTTP Request" in caplog.text  # the HTTP client did log the URL it called
    token = base64.b64encode(b"alice:pw-0f9e8d7c").decode()
    for text in shown:
        assert "pw-0f9e8d7c" not in text and token not in text and SECRET not in text


async def test_the_endpoints_connection_pool_bounds_requests_in_flight() -> None:
    async with open_openai_server(latency=0.2) as server:
        async with _client(server, max_connections=2) as client:
            await asyncio.gather(*(client.chat(f"q{i}", model=MODEL) for i in range(6)))
        served = server.requests
    moments = sorted([(r.started_at, 1) for r in served] + [(r.finished_at, -1) for r in served])
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    assert len(served) == 6 and peak <= 2
