"""Send JSONL lines to a pipeline's input topic (the ``produce`` command and ``run --broker``)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable

from streamflow.errors import EventError
from streamflow.events import loads
from streamflow.transports.kafka import KafkaSettings, produce_lines

__all__ = ["produce_input"]


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
