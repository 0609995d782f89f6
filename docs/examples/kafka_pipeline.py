"""A pipeline ready for Kafka: typed stages, its topics and groups, and connection settings.

export STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
streamflow topics create docs/examples/kafka_pipeline.py --partitions 4
streamflow worker docs/examples/kafka_pipeline.py --stage enrich
streamflow worker docs/examples/kafka_pipeline.py --stage reply
"""

from __future__ import annotations

from pydantic import BaseModel

from streamflow import Pipeline, Stage, map_async
from streamflow.transports.kafka import KafkaSettings


class Order(BaseModel):
    id: str
    customer: str
    total: float


class Enriched(BaseModel):
    id: str
    customer: str
    total: float
    tier: str


class Reply(BaseModel):
    id: str
    customer: str
    text: str


def enrich(o: Order) -> Enriched:
    return Enriched(**o.model_dump(), tier="gold" if o.total >= 100 else "standard")


async def reply(e: Enriched) -> Reply:
    # After a Kafka hop the worker of this stage decodes the payload to Enriched again.
    return Reply(id=e.id, customer=e.customer, text=f"thanks, {e.tier} customer")


def build(
    name: str = "orders", *, input_topic: str | None = None, output_topic: str | None = None
) -> Pipeline:
    return Pipeline(
        name,
        [
            # Per-key order holds only when every stage before keeps it too.
            Stage("enrich", map_async(enrich, ordered="key")),
            Stage("reply", map_async(reply, ordered="key")),
        ],
        input_model=Order,
        key_field="customer",  # the Kafka key: ordering is per customer
        input_topic=input_topic,
        output_topic=output_topic,
    )


pipeline = build()
# The same stages plugged into topics that exist already (those between stay orders.*).
crm = build(input_topic="crm.orders", output_topic="crm.replies")


def confluent_cloud_settings(api_key: str, api_secret: str) -> KafkaSettings:
    """The settings a Confluent Cloud cluster takes; in production, set them in the
    environment as STREAMFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL and so on."""
    return KafkaSettings.load(
        bootstrap_servers="pkc-00000.europe-west1.gcp.confluent.cloud:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username=api_key,
        sasl_password=api_secret,
    )


if __name__ == "__main__":
    print(pipeline.topics())  # orders.in, orders.enrich, orders.out, orders.dlq, orders.review
    print([pipeline.group(stage.name) for stage in pipeline.stages])
    print(crm.input_topic, crm.output_topic)
    print(confluent_cloud_settings("KEY", "SECRET"))  # the secret prints as **********
