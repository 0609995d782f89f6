"""The review queue of a distributed pipeline: ``{pipeline}.review`` and its decisions topic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamflow.errors import EventError
from streamflow.events import Event, decode_event, dumps, loads
from streamflow.runtime._pipeline import Pipeline
from streamflow.runtime.review._decisions import (
    REVIEW_STEP,
    Decision,
    DecisionKind,
    choose,
    decide,
    decisions_topic,
    parked_only,
    pending,
)
from streamflow.runtime.review._files import ReviewResult

if TYPE_CHECKING:
    from streamflow.transports.kafka import KafkaSettings

__all__ = ["KafkaReviewQueue"]


class KafkaReviewQueue:
    """The review queue of a distributed pipeline: ``{pipeline}.review`` and its decisions.

    Listing reads both topics from the beginning without a consumer group, so
    it commits nothing and any number of people can look. Approving produces
    the event to the output topic (or the topic of the stage it continues
    with); rejecting produces it to the rework stage's input topic, where the
    running workers pick it up. The decisions topic is created on first use.

    Args:
        pipeline: the pipeline.
        settings: broker settings.
        idle_timeout: seconds without a record after which a read of the topics ends.
    """

    def __init__(
        self, pipeline: Pipeline, settings: KafkaSettings, *, idle_timeout: float = 1.0
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.idle_timeout = idle_timeout
        self.decisions_topic = decisions_topic(pipeline)

    async def _read(self) -> tuple[list[Event], list[Decision]]:
        from streamflow.transports.kafka import consume_events, create_topics, describe_topics

        topics = [self.pipeline.review_topic, self.decisions_topic]
        await create_topics(self.settings, topics)
        described = await describe_topics(self.settings, topics)
        total = sum(sum(info.get("end_offsets", {}).values()) for info in described.values())
        events: list[Event] = []
        decisions: list[Decision] = []
        if total == 0:
            return events, decisions
        async for topic, value in consume_events(
            self.settings, topics, group=None, count=total, idle_timeout=self.idle_timeout
        ):
            try:
                if topic == self.decisions_topic:
                    decisions.append(Decision.model_validate(loads(value)))
                else:
                    events.append(decode_event(value))
            except (EventError, ValueError):
                continue
        # Partitions interleave; the decision order that matters is by time.
        events = parked_only(self.pipeline, events)
        events.sort(key=lambda e: e.trace[-1].started_at if e.trace else e.created_at)
        return events, decisions

    async def pending(self) -> list[Event]:
        """Return the parked events nobody has decided yet.

        Raises:
            TransportError: the broker could not be reached.
        """
        events, decisions = await self._read()
        return pending(events, decisions)

    async def approve(self, event_id: str, note: str | None = None) -> ReviewResult:
        """Approve ``event_id``: produce it to the output topic (or its next stage's topic).

        Raises:
            ConfigError: unknown id, or already decided.
            TransportError: the broker could not be reached or refused the write.
        """
        return await self._apply(event_id, "approved", note)

    async def reject(self, event_id: str, note: str) -> ReviewResult:
        """Reject ``event_id``: produce it with ``note`` as feedback to the rework stage's topic.

        Raises:
            ConfigError: unknown id, already decided, or an empty note.
            TransportError: the broker could not be reached or refused the write.
        """
        return await self._apply(event_id, "rejected", note)

    async def _apply(self, event_id: str, kind: DecisionKind, note: str | None) -> ReviewResult:
        from streamflow.runtime._produce import send_events
        from streamflow.transports.kafka import produce_lines

        events, decisions = await self._read()
        event = choose(event_id, events, decisions, self.pipeline.review_topic)
        changed, stage, decision = decide(self.pipeline, event, kind, note)
        topic = self.pipeline.output_topic if stage is None else self.pipeline.topic_into(stage)
        await send_events(self.settings, self.pipeline, topic, [changed], stage=REVIEW_STEP)
        # Recorded after the event is acknowledged: a lost decision at worst
        # repeats a send of the same id, which consumers drop as a duplicate.
        await produce_lines(self.settings, self.decisions_topic, [dumps(decision)], key_field="id")
        return ReviewResult(
            decision=decision, sent_to=stage or "output", event=changed, outcome=None
        )
