"""The model client's pure parts: prices, usage records, Retry-After, redaction, settings."""

from __future__ import annotations

import base64
import datetime
import email.utils
import json
import logging
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from operators.models import openai as openai_module
from operators.models._errors import (
    error_for_sdk,
    parse_retry_after,
    redact,
    redact_url,
    request_status,
    url_secrets,
)
from operators.models._structured import chat_messages, parse_structured, with_schema_hint
from operators.models.openai import (
    DEFAULT_BASE_URL,
    ModelEndpoint,
    ModelOutputInvalid,
    Usage,
    usage_record,
)
from operators.models.pricing import ModelPrice, PriceTable
from streamflow.errors import (
    ConfigError,
    RateLimited,
    StepFailed,
    StepTimeout,
    Unavailable,
)

SECRET = "sk-test-0123456789abcdef"


# -- prices ---------------------------------------------------------------------------


def test_price_table_costs_input_and_output_tokens_per_million() -> None:
    table = PriceTable({"m": ModelPrice(2.0, 8.0)})
    assert table.cost("m", 1_000_000, 0) == pytest.approx(2.0)
    assert table.cost("m", 500_000, 250_000) == pytest.approx(1.0 + 2.0)


def test_an_unknown_models_cost_is_unknown_not_zero() -> None:
    assert PriceTable.defaults().cost("llama3:8b", 10_000, 10_000) is None
    assert "llama3:8b" not in PriceTable.defaults()


def test_the_shipped_table_says_the_date_of_its_prices() -> None:
    from operators.models import pricing

    assert isinstance(pricing.PRICES_AS_OF, datetime.date)
    assert "PRICES_AS_OF" in (pricing.__doc__ or "")
    assert str(pricing.PRICES_AS_OF.year) in pricing.describe_defaults()


def test_prices_from_the_environment_and_a_file_override_the_defaults(tmp_path: Path) -> None:
    file = tmp_path / "prices.json"
    file.write_text(json.dumps({"my-llama": [0, 0], "gpt-4o": {"input": 1.0, "output": 2.0}}))
    table = PriceTable.from_env(
        {
            "STREAMFLOW_MODEL_PRICES_FILE": str(file),
            "STREAMFLOW_MODEL_PRICES": "gpt-4o=3/4, house-model=0.5",
        }
    )
    assert table.cost("my-llama", 1000, 1000) == 0.0  # free, and known to be
    assert table.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(7.0)  # the variable wins
    assert table.cost("house-model", 2_000_000, 0) == pytest.approx(1.0)
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)  # defaults stay


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"STREAMFLOW_MODEL_PRICES": "gpt-4o=cheap"}, "STREAMFLOW_MODEL_PRICES"),
        ({"STREAMFLOW_MODEL_PRICES": "gpt-4o=-1/2"}, "STREAMFLOW_MODEL_PRICES"),
        ({"STREAMFLOW_MODEL_PRICES_FILE": "/nonexistent.json"}, "STREAMFLOW_MODEL_PRICES_FILE"),
    ],
)
def test_unreadable_prices_fail_at_start_naming_the_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        PriceTable.from_env(environ)


def test_a_backend_on_a_model_without_a_price_warns_once_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from operators.models.llm import LLMClassifier

    client = openai_module.ModelClient(
        ModelEndpoint(base_url="http://127.0.0.1:9/v1"), prices=PriceTable.defaults()
    )
    with caplog.at_level(logging.WARNING):
        LLMClassifier(client, "house-llama", ["a", "b"])
        LLMClassifier(client, "house-llama", ["a", "b"])
        LLMClassifier(client, "gpt-4o-mini", ["a", "b"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "house-llama" in warnings[0] and "STREAMFLOW_MODEL_PRICES" in warnings[0]


def test_dated_variant_takes_the_price_of_its_longest_base_name() -> None:
    table = PriceTable.defaults()
    assert table.get("gpt-4o-mini-2024-07-18") == table.get("gpt-4o-mini")
    assert table.get("gpt-4o-2024-08-06") == table.get("gpt-4o")
    assert table.get("gpt-4o-mini") != table.get("gpt-4o")


def test_prefix_match_needs_a_separator() -> None:
    table = PriceTable({"gpt-4": (30.0, 60.0)})
    assert table.get("gpt-4o") is None
    assert table.get("gpt-4-0613") == ModelPrice(30.0, 60.0)


def test_user_set_price_replaces_the_default_without_touching_other_tables() -> None:
    mine = PriceTable.defaults()
    mine.set("gpt-4o", 1.0, 1.0)
    assert mine.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(2.0)
    assert PriceTable.defaults().cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)


def test_negative_price_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        PriceTable().set("m", -1.0)


# -- usage on the trace ------------------------------------------------------------------


def test_usage_becomes_a_step_record_with_model_tokens_and_cost() -> None:
    usage = Usage("gpt-4o-mini", tokens_in=12, tokens_out=30, latency_s=0.5, cost_usd=0.01)
    record = usage.to_record("generate", detail="draft")
    assert (record.step, record.model, record.tokens_in, record.tokens_out) == (
        "generate",
        "gpt-4o-mini",
        12,
        30,
    )
    assert record.cost_usd == pytest.approx(0.01)
    assert record.duration_s == pytest.approx(0.5)
    assert record.detail == "draft"


def test_usage_record_sums_several_calls_of_one_step() -> None:
    a = Usage("embed", tokens_in=5, cost_usd=0.001, started_at=10.0)
    b = Usage("chat", tokens_in=7, tokens_out=9, cost_usd=0.002, started_at=9.0)
    record = usage_record("answer", a, b)
    assert (record.model, record.tokens_in, record.tokens_out) == ("embed+chat", 12, 9)
    assert record.cost_usd == pytest.approx(0.003)
    assert record.started_at == 9.0
    assert (a + b).requests == 2


def test_usage_record_needs_a_usage() -> None:
    with pytest.raises(ConfigError):
        usage_record("answer")


# -- Retry-After ------------------------------------------------------------------------


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "1.5"})) == 1.5


def test_retry_after_ms_wins_for_precision() -> None:
    headers = httpx.Headers({"Retry-After": "1", "retry-after-ms": "250"})
    assert parse_retry_after(headers) == 0.25


def test_retry_after_as_http_date_counts_from_now() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": date}), now=now) == pytest.approx(30)


def test_retry_after_in_the_past_or_unreadable() -> None:
    now = 1_700_000_000.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": past}), now=now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


# -- error mapping -----------------------------------------------------------------------


URL = "http://127.0.0.1:1/v1"


def _status_error(status: int, body: bytes, headers: dict[str, str] | None = None) -> Exception:
    import httpx2
    import openai

    request = httpx2.Request("POST", f"{URL}/chat/completions")
    response = httpx2.Response(status, content=body, headers=headers, request=request)
    parsed = json.loads(body) if body else None
    return (
        openai.AsyncOpenAI(api_key="k", base_url=URL)._make_status_error_from_response(response)
        if parsed is None
        else openai.APIStatusError("error", response=response, body=parsed)
    )


def _map(exc: Exception, secrets: list[str] | None = None) -> Exception:
    mapped = error_for_sdk(exc, model="m", url=URL, timeout=2.0, secrets=secrets or [])
    assert mapped is not None
    return mapped


@pytest.mark.parametrize(
    ("status", "label", "error", "retriable"),
    [
        (429, "429", RateLimited, True),
        (500, "5xx", Unavailable, True),
        (503, "5xx", Unavailable, True),
        (400, "4xx", StepFailed, False),
        (401, "4xx", StepFailed, False),
        (404, "4xx", StepFailed, False),
    ],
)
def test_status_codes_map_to_the_error_tree(
    status: int, label: str, error: type[Exception], retriable: bool
) -> None:
    exc = _map(_status_error(status, b'{"error": {"message": "nope"}}'))
    assert type(exc) is error
    assert exc.retriable is retriable
    assert request_status(status) == label
    assert f"answered {status}" in str(exc) and "nope" in str(exc)


def test_rate_limited_carries_retry_after() -> None:
    exc = _map(_status_error(429, b"{}", {"Retry-After": "3"}))
    assert isinstance(exc, RateLimited) and exc.retry_after == 3.0


def test_sdk_timeouts_map_to_step_timeout_and_connection_errors_to_unavailable() -> None:
    import httpx2
    import openai

    request = httpx2.Request("POST", f"{URL}/chat/completions")
    timeout = _map(openai.APITimeoutError(request=request))
    refused = _map(openai.APIConnectionError(request=request))
    assert isinstance(timeout, StepTimeout) and "2s" in str(timeout)
    assert isinstance(refused, Unavailable) and "unreachable" in str(refused)
    assert error_for_sdk(ValueError("x"), model="m", url=URL, timeout=1.0, secrets=[]) is None


def test_error_messages_scrub_the_key_and_any_bearer_token() -> None:
    body = (
        b'{"error": {"message": "bad key; headers: {\'authorization\': \'Bearer '
        + SECRET.encode()
        + b"', 'x-other': 'Bearer abc.def'}\"}}"
    )
    exc = _map(_status_error(401, body), [SECRET])
    assert SECRET not in str(exc)
    assert "abc.def" not in str(exc)
    assert "[redacted]" in str(exc)


def test_credentials_in_a_base_url_are_scrubbed_plain_and_as_a_basic_token() -> None:
    url = "http://alice:s3cr3t-pw@proxy.example:8080/v1?key=abc"
    secrets = url_secrets(url)
    token = base64.b64encode(b"alice:s3cr3t-pw").decode()
    text = f"failed at {url}; headers: {{'authorization': 'Basic {token}'}}, again {token}"
    shown = redact(text, secrets)
    assert "s3cr3t-pw" not in shown and token not in shown
    assert redact_url(url) == "http://proxy.example:8080/v1"


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("plain words", [SECRET, ""]) == "plain words"


# -- endpoint settings -------------------------------------------------------------------


def test_endpoint_from_env_reads_base_url_and_key() -> None:
    endpoint = ModelEndpoint.from_env(
        {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1/", "OPENAI_API_KEY": SECRET}
    )
    assert endpoint.base_url == "http://127.0.0.1:8000/v1"
    assert endpoint.api_key is not None and endpoint.api_key.get_secret_value() == SECRET


def test_endpoint_defaults_to_openai_without_a_key() -> None:
    endpoint = ModelEndpoint.from_env({})
    assert endpoint.base_url == DEFAULT_BASE_URL
    assert endpoint.api_key is None


def test_endpoint_with_a_bad_url_names_the_variable_to_fix() -> None:
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        ModelEndpoint.from_env({"OPENAI_BASE_URL": "localhost:8000"})


@pytest.mark.parametrize("key", [SECRET + "\n", f" {SECRET}", "sk-with space", "sk-é"])
def test_a_key_a_header_cannot_carry_is_named_at_start(key: str) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as caught:
        ModelEndpoint.from_env({"OPENAI_API_KEY": key})
    assert "whitespace" in str(caught.value) and SECRET not in str(caught.value)


def test_endpoint_never_shows_its_key() -> None:
    endpoint = ModelEndpoint.from_env(
        {"OPENAI_BASE_URL": "https://user:pw@example.invalid/v1", "OPENAI_API_KEY": SECRET}
    )
    shown = [repr(endpoint), str(endpoint), endpoint.model_dump_json(), f"{endpoint}"]
    for text in shown:
        assert SECRET not in text
    assert "pw@" not in repr(endpoint)
    assert SECRET not in repr(openai_module.ModelClient(endpoint))


# -- request bodies and structured output ------------------------------------------------


class Verdict(BaseModel):
    label: str
    score: float


def test_json_mode_messages_carry_the_schema_first() -> None:
    messages = with_schema_hint(chat_messages("classify this", "m"), Verdict)
    assert messages[0]["role"] == "system"
    assert "JSON" in messages[0]["content"]
    assert '"score"' in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "classify this"}


def test_structured_output_in_a_code_fence_is_accepted() -> None:
    parsed = parse_structured('```json\n{"label": "billing", "score": 0.9}\n```', Verdict, "m")
    assert parsed == Verdict(label="billing", score=0.9)


def test_structured_output_that_does_not_validate_is_a_step_failure() -> None:
    with pytest.raises(ModelOutputInvalid) as caught:
        parse_structured('{"label": "billing"}', Verdict, "m")
    assert isinstance(caught.value, StepFailed) and not caught.value.retriable
    assert "score" in str(caught.value) and caught.value.content == '{"label": "billing"}'


def test_chat_without_a_model_or_messages_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        chat_messages("hi", "")
    with pytest.raises(ConfigError):
        chat_messages([], "m")
