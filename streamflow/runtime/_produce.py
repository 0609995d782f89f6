"""Send records to a pipeline's topics.

JSONL lines to its input topic (the ``produce`` command and ``run --broker``),
and streamflow events to a stage's topic (a review decision, a dead-letter replay).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING

from streamflow.errors import EventError, StreamflowError
from streamflow.events import Event, loads
from streamflow.transports.kafka import KafkaSettings, produce_lines

if TYPE_CHECKING:
    from streamflow.runtime._pipeline import Pipeline

__all__ = ["produce_input", "send_events"]


async def produce_input(
    settings: KafkaSettings,
    topic: str,
    lines: Iterable[bytes] | AsyncIterable[bytes],
    *,
    key_field: str | None,
) -> int:
    """Send JSONL lines to an input topic, keyed by ``key_field`` where a line has one.

    A line that is not a JSON object is still sent (without a key), so the
    first stage dead-letters it with the reason instead of the whole input
    being refused.

    Args:
        settings: broker settings.
        topic: the input topic.
        lines: the lines, blank ones skipped.
        key_field: payload field whose value becomes the Kafka key.

    Returns:
        How many records the broker acknowledged.

    Raises:
        TransportError: the broker could not be reached or refused a write.
    """
    if key_field is None:
        return await produce_lines(settings, topic, lines, key_field=None)
    misfits: list[bytes] = []

    async def objects() -> AsyncIterator[bytes]:
        async for line in _aiter(lines):
            try:
                fits = isinstance(loads(line), dict)
            except EventError:
                fits = False
            if fits:
                yield line
            elif line.strip():
                misfits.append(line)

    count = await produce_lines(settings, topic, objects(), key_field=key_field)
    if misfits:
        count += await produce_lines(settings, topic, misfits, key_field=None)
    return count


async def _aiter(lines: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


async def send_events(
    settings: KafkaSettings,
    pipeline: Pipeline,
    topic: str,
    events: Iterable[Event],
    *,
    stage: str,
) -> None:
    """Send ``events`` to ``topic`` as streamflow events (with the event header).

    They are written as a stage writes them: bounded by the pipeline's record
    limits, an unwritable one a dead letter on the pipeline's dead-letter topic.

    Args:
        settings: broker settings.
        pipeline: the pipeline whose topics and limits apply.
        topic: where the events go (a stage's input topic, or the output topic).
        events: the events.
        stage: who sends them, named in dead letters (``review``, ``replay``).

    Raises:
        StreamflowError: the broker did not acknowledge every event.
    """
    from streamflow.transports.kafka import KafkaSink

    sink = KafkaSink(
        settings,
        output_topic=topic,
        dlq_topic=pipeline.dlq_topic,
        review_topic=pipeline.review_topic,
        stage=stage,
        limits=pipeline.limits,
    )
    await sink.start()
    try:
        for event in events:
            sink.write(event)
        await sink.flush()
        ok, reason = sink.healthy()
        if not ok:
            raise StreamflowError(f"sending {stage} events to {topic} failed: {reason}")
    finally:
        await sink.aclose()
