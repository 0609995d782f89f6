"""The Kafka page's example pipeline runs through real topics, typed steps and all."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from pathlib import Path

import pytest

from streamflow.events import decode_event, dumps
from streamflow.runtime import run_distributed
from streamflow.transports.kafka import KafkaSettings

pytestmark = pytest.mark.kafka


def test_the_kafka_pages_pipeline_runs_through_topics(tmp_path: Path, kafka_broker: str) -> None:
    example = importlib.import_module("docs.examples.kafka_pipeline")
    pipeline = example.build(f"orders{uuid.uuid4().hex[:8]}")
    orders = [
        {"id": f"o-{n:02d}", "customer": f"c-{n % 3}", "total": 40.0 * (n % 4)} for n in range(12)
    ]
    source = tmp_path / "orders.jsonl"
    source.write_bytes(b"\n".join(dumps(order) for order in orders) + b"\n")
    out = tmp_path / "replies.jsonl"

    report = asyncio.run(
        run_distributed(
            pipeline,
            KafkaSettings.load(bootstrap_servers=kafka_broker),
            input_path=str(source),
            output_path=str(out),
        )
    )

    assert report.error is None
    replies = {e.id: e.payload for e in map(decode_event, out.read_bytes().splitlines())}
    assert sorted(replies) == [order["id"] for order in orders]
    # total 120 (n % 4 == 3) is gold; the reply stage got an Enriched after the hop.
    assert replies["o-03"]["text"] == "thanks, gold customer"
    assert replies["o-01"]["text"] == "thanks, standard customer"
