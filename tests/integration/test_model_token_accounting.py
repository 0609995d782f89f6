"""Every billed token is on a trace: the pipeline against an OpenAI-wire server written here.

The server below is a minimal, independent implementation of the three
endpoints the pipeline calls (chat completions plain and streamed,
embeddings), on the standard library's ``http.server``: nothing of
``streamflow.testing`` or of the client. It injects 500s, 429s with
``Retry-After`` and structured answers whose JSON is broken (billed all the
same), and adds up the usage it returned. The sum of tokens and cost over the
traces of every event (answered, for review, dead letters) must equal that,
and so must ``streamflow_model_tokens_total`` and ``streamflow_model_cost_usd_total``.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from operators import check, classify, generate, retrieve
from operators.generate_loop import generate_until_checked, judge_answer
from operators.models import Article, ModelClient, ModelEndpoint, PriceTable
from operators.models.llm import (
    CallPolicy,
    ChatComposer,
    EmbeddingRetriever,
    LLMClassifier,
    LLMJudge,
    report_request,
)
from streamflow import Pipeline, Stage
from streamflow.metrics import PipelineMetrics
from streamflow.ops import RetryPolicy
from streamflow.runtime import run_flow
from streamflow.transports import IterableSource, JsonlSink

CHAT, EMBED = "acct-chat", "acct-embed"
PRICES = PriceTable({CHAT: (3.0, 15.0), EMBED: (0.1, 0.0)})
LABELS = ("billing", "shipping", "account")
ARTICLES = [
    Article(id="kb-1", title="Refunds", body="Refunds reach your card within five days."),
    Article(id="kb-2", title="Tracking", body="Track a parcel with its tracking number."),
    Article(id="kb-3", title="Passwords", body="Reset a password from the sign-in page."),
]
TICKETS = 60
_WORD = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> int:
    return len(_WORD.findall(text))


class _Ledger:
    """What the server answered: usage it returned per model, and status counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.usage: Counter[tuple[str, str]] = Counter()
        self.statuses: Counter[int] = Counter()
        self.broken = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ledger: _Ledger

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.ledger.lock:
            self.ledger.count += 1
            n = self.ledger.count
        if n % 9 == 0:
            self._send(500, {"error": {"message": "injected 500"}})
            return
        if n % 13 == 0:
            self._send(429, {"error": {"message": "slow down"}}, {"retry-after": "0.05"})
            return
        if self.path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            used = sum(_tokens(t) for t in texts)
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(t)}
                for i, t in enumerate(texts)
            ]
            self._bill(body["model"], used, 0)
            self._send(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": used, "total_tokens": used},
                },
            )
            return
        prompt = sum(_tokens(str(m.get("content") or "")) for m in body["messages"])
        content = _answer(body)
        if body.get("response_format") and n % 6 == 0:
            content = content[: len(content) // 2]  # broken JSON, billed all the same
            with self.ledger.lock:
                self.ledger.broken += 1
        completion = _tokens(content)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        self._bill(body["model"], prompt, completion)
        if body.get("stream"):
            self._stream(body, content, usage)
            return
        message = {"role": "assistant", "content": content}
        self._send(
            200,
            {
                "id": f"c{n}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            },
        )

    def _bill(self, model: str, prompt: int, completion: int) -> None:
        with self.ledger.lock:
            self.ledger.usage[(model, "in")] += prompt
            self.ledger.usage[(model, "out")] += completion

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        with self.ledger.lock:
            self.ledger.statuses[status] += 1
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: dict[str, Any], content: str, usage: dict[str, int]) -> None:
        base = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        events = [
            {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            for word in re.findall(r"\S+\s*", content)
        ]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append({**base, "choices": [], "usage": usage})
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        data += b"data: [DONE]\n\n"
        with self.ledger.lock:
            self.ledger.statuses[200] += 1
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _vector(text: str) -> list[float]:
    words = set(re.findall(r"\w+", text.lower()))
    return [1.0 if key in words else 0.01 for key in ("refund", "parcel", "password", "card")]


def _answer(body: dict[str, Any]) -> str:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        if "label" in schema["properties"]:
            text = body["messages"][-1]["content"].lower()
            label = next((x for x in LABELS if x in text), LABELS[0])
            return json.dumps({"label": label, "confidence": 0.9, "reason": "keywords"})
        return json.dumps({"outcome": "pass", "reasons": [], "groundedness": 0.9})
    passage = re.search(r"^\[(kb-\d)\] [^\n]*\n([^\n]+)", body["messages"][-1]["content"], re.M)
    if passage is None:
        return "Please reply with more details."
    return f"{passage.group(2)} [{passage.group(1)}]"


@contextmanager
def _serve() -> Iterator[tuple[str, _Ledger]]:
    ledger = _Ledger()
    handler = type("Handler", (_Handler,), {"ledger": ledger})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", ledger
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _trace_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    event = record.get("event", record) if "error" in record and "event" in record else record
    return list((event or {}).get("trace") or [])


async def test_trace_tokens_equal_what_the_server_billed_and_the_metrics(tmp_path: Path) -> None:
    subjects = ["refund to my card", "parcel tracking lost", "password reset broken"]
    tickets = [
        {"id": f"T{i:03d}", "subject": subjects[i % 3], "body": f"ticket {i} " + subjects[i % 3]}
        for i in range(TICKETS)
    ]
    registry = CollectorRegistry()
    with _serve() as (base_url, served):
        client = ModelClient(
            ModelEndpoint(base_url=base_url, api_key="sk-acct"),
            prices=PRICES,
            on_request=report_request,
        )
        policy = CallPolicy(retry=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.1))
        judge = LLMJudge(client, CHAT, policy=policy)
        pipeline = Pipeline(
            "accounting",
            stages=[
                Stage("classify", classify(LLMClassifier(client, CHAT, LABELS, policy=policy))),
                Stage(
                    "retrieve",
                    retrieve(EmbeddingRetriever(client, EMBED, ARTICLES, policy=policy), k=1),
                ),
                Stage(
                    "generate",
                    generate_until_checked(
                        lambda composer, step: generate(composer, name=step),
                        lambda step: check(name=step),
                        escalate=[ChatComposer(client, CHAT, policy=policy)],
                        judge_step=lambda step: judge_answer(judge, name=step),
                        max_rounds=2,
                    ),
                ),
            ],
        )
        metrics = PipelineMetrics(registry, pipeline.name)
        async with client:
            report = await run_flow(
                pipeline,
                IterableSource([json.dumps(t).encode() for t in tickets]),
                JsonlSink(tmp_path / "out.jsonl"),
                metrics=metrics,
            )
    assert report.error is None
    records = [
        *_lines(tmp_path / "out.jsonl"),
        *_lines(tmp_path / "out.review.jsonl"),
        *_lines(tmp_path / "out.dlq.jsonl"),
    ]
    assert len(records) == TICKETS
    traced: Counter[tuple[str, str]] = Counter()
    traced_cost = 0.0
    for record in records:
        for step in _trace_of(record):
            if step.get("model") in (CHAT, EMBED):
                traced[(step["model"], "in")] += step["tokens_in"]
                traced[(step["model"], "out")] += step["tokens_out"]
                traced_cost += step["cost_usd"]
    metric: Counter[tuple[str, str]] = Counter()
    metric_cost = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "streamflow_model_tokens_total":
                metric[(sample.labels["model"], sample.labels["direction"])] += int(sample.value)
            if sample.name == "streamflow_model_cost_usd_total":
                metric_cost += sample.value
    billed = {key: value for key, value in served.usage.items() if value}
    billed_cost = sum(
        PRICES.cost(model, served.usage[(model, "in")], served.usage[(model, "out")])
        for model in (CHAT, EMBED)
    )
    dead = [r for r in _lines(tmp_path / "out.dlq.jsonl")]
    print(
        f"\nserver returned usage {dict(billed)} (${billed_cost:.6f}); traces {dict(traced)} "
        f"(${traced_cost:.6f}); metric {dict(metric)} (${metric_cost:.6f}); statuses "
        f"{dict(served.statuses)}, broken JSON answers {served.broken}, dead letters {len(dead)}"
    )
    # Faults really happened, including billed answers that failed validation.
    assert served.statuses[500] > 0 and served.statuses[429] > 0 and served.broken > 0
    assert any(r["error"]["type"] == "ModelOutputInvalid" for r in dead)
    assert {key: value for key, value in traced.items() if value} == billed
    assert dict(metric) == billed
    assert abs(traced_cost - billed_cost) < 1e-9 and abs(metric_cost - billed_cost) < 1e-9
