"""batch_async, filter and tap in virtual time."""

from __future__ import annotations

import asyncio

import pytest

from streamflow.errors import ConfigError, Unavailable
from streamflow.events import Event
from streamflow.ops import BatchStatistics, RetryPolicy, batch_async, filter, map_async, pipe, tap
from streamflow.testing.marbles import run_marbles

pytestmark = pytest.mark.looptime


class EmbedRecorder:
    """A batch step that records when each batch arrived and what was in it."""

    def __init__(self, delays: list[float] | None = None) -> None:
        self.batches: list[tuple[float, list[str]]] = []
        self.delays = delays or []

    async def __call__(self, events: list[Event]) -> list[Event]:
        self.batches.append((asyncio.get_running_loop().time(), [e.id for e in events]))
        if len(self.batches) <= len(self.delays):
            await asyncio.sleep(self.delays[len(self.batches) - 1])
        return [e.with_payload({"vector": [len(events)]}) for e in events]


# -- batch_async ---------------------------------------------------------------


async def test_batch_flushes_as_soon_as_it_holds_max_size() -> None:
    embed = EmbedRecorder()
    op = batch_async(embed, max_size=3, max_wait=10, name="embed")

    result = await run_marbles(op, "abc-de|")

    # The end of the input is not a flush: the last batch goes when its timer runs out.
    assert embed.batches == [(2.0, ["a", "b", "c"]), (14.0, ["d", "e"])]
    assert result.pairs == [(2.0, "a"), (2.0, "b"), (2.0, "c"), (14.0, "d"), (14.0, "e")]
    assert [e.payload for e in result.events] == [{"vector": [3]}] * 3 + [{"vector": [2]}] * 2
    assert result.events[0].trace[-1].step == "embed"
    assert result.events[0].trace[-1].detail == "batch of 3"


async def test_batch_flushes_after_max_wait_from_its_first_event() -> None:
    embed = EmbedRecorder()
    op = batch_async(embed, max_size=10, max_wait=3)

    result = await run_marbles(op, "a-b------c---|")

    # a arrives at 0, so the timer flushes [a, b] at 3; c opens a new batch at 9.
    assert embed.batches == [(3.0, ["a", "b"]), (12.0, ["c"])]
    assert result.pairs == [(3.0, "a"), (3.0, "b"), (12.0, "c")]
    assert result.completed_at == 13.0


async def test_batch_failing_for_good_fails_every_member_and_the_stream_goes_on() -> None:
    calls: list[list[str]] = []

    async def embed(events: list[Event]) -> list[Event]:
        calls.append([e.id for e in events])
        if "b" in [e.id for e in events]:
            raise Unavailable("embedding server down")
        return events

    policy = RetryPolicy(max_attempts=2, base_delay=1.0, jitter=0)
    op = batch_async(embed, max_size=2, max_wait=5, retry=policy, name="embed")

    result = await run_marbles(op, "abc|")

    assert calls == [["a", "b"], ["a", "b"], ["c"]]
    by_id = {e.id: e for e in result.events}
    for member in ("a", "b"):
        event = by_id[member]
        assert event.outcome == "failed"
        assert event.error is not None
        assert (event.error.type, event.error.step) == ("Unavailable", "embed")
        assert event.attempts == 2
    assert by_id["c"].outcome == "ok"
    assert result.completed_at is not None


async def test_batch_returning_the_wrong_count_fails_the_batch() -> None:
    async def lossy(events: list[Event]) -> list[Event]:
        return events[:1]

    result = await run_marbles(batch_async(lossy, max_size=2, max_wait=5), "ab|")

    assert [e.outcome for e in result.events] == ["failed", "failed"]
    error = result.events[0].error
    assert error is not None
    assert error.type == "StepFailed"
    assert "returned 1 events for 2" in error.message


async def test_batch_with_concurrency_one_keeps_input_order_behind_a_slow_batch() -> None:
    embed = EmbedRecorder(delays=[5.0, 1.0, 1.0])
    op = batch_async(embed, max_size=2, max_wait=1.5, concurrency=1)

    result = await run_marbles(op, "abcde|")

    assert result.ids == ["a", "b", "c", "d", "e"]
    # Batches run one at a time: [a,b] 1..6, [c,d] 6..7, [e] 7..8.
    assert [t for t, _ in embed.batches] == [1.0, 6.0, 7.0]
    assert result.completed_at == 8.0
    assert op.ordering == "input"
    stats = op.statistics()
    assert isinstance(stats, BatchStatistics)
    assert (stats.batches, stats.largest, stats.running, stats.buffered) == (3, 2, 0, 0)


async def test_batch_lets_inactive_events_pass_without_joining_a_batch() -> None:
    embed = EmbedRecorder()
    values = {"f": Event(id="f", outcome="failed")}

    result = await run_marbles(batch_async(embed, max_size=2, max_wait=2), "af|", values=values)

    assert embed.batches == [(2.0, ["a"])]
    assert result.pairs == [(1.0, "f"), (2.0, "a")]


def test_batch_rejects_nonsense_bounds() -> None:
    with pytest.raises(ConfigError):
        batch_async(EmbedRecorder(), max_size=0)
    with pytest.raises(ConfigError):
        batch_async(EmbedRecorder(), max_wait=0)


# -- filter ---------------------------------------------------------------------


async def test_filtered_events_come_out_marked_not_dropped() -> None:
    op = filter(lambda e: e.payload != "spam", name="drop_spam")
    values = {"s": "spam"}

    result = await run_marbles(op, "a-s-b|", values=values)

    assert result.pairs == [(0.0, "a"), (2.0, "s"), (4.0, "b")]
    spam = result.events[1]
    assert spam.outcome == "filtered"
    assert spam.reason == "filtered by drop_spam"
    assert [(r.step, r.outcome) for r in spam.trace] == [("drop_spam", "filtered")]
    assert [e.outcome for e in (result.events[0], result.events[2])] == ["ok", "ok"]
    assert result.events[0].trace == []


async def test_filtered_events_skip_later_steps() -> None:
    called: list[str] = []

    async def answer(event: Event) -> Event:
        called.append(event.id)
        return event

    op = pipe(filter(lambda e: e.id != "s"), map_async(answer, ordered=True))

    result = await run_marbles(op, "asb|")

    assert called == ["a", "b"]
    assert result.ids == ["a", "s", "b"]
    assert result.events[1].outcome == "filtered"


async def test_filter_predicate_raising_fails_the_event_not_the_stream() -> None:
    op = filter(lambda e: e.payload["lang"] == "en", name="english_only")

    result = await run_marbles(op, "ab|", values={"a": {"lang": "en"}, "b": {}})

    assert [e.outcome for e in result.events] == ["ok", "failed"]
    error = result.events[1].error
    assert error is not None
    assert (error.type, error.step) == ("KeyError", "english_only")
    assert result.completed_at == 2.0


# -- tap -----------------------------------------------------------------------


async def test_tap_runs_its_side_effect_per_event_and_passes_events_unchanged() -> None:
    seen: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    result = await run_marbles(tap(lambda e: seen.append((loop.time() - start, e.id))), "a-b|")

    assert seen == [(0.0, "a"), (2.0, "b")]
    assert result.pairs == [(0.0, "a"), (2.0, "b")]
    assert all(e.trace == [] and e.outcome == "ok" for e in result.events)


async def test_tap_that_raises_leaves_a_trace_record_and_the_event_goes_on() -> None:
    def explode(event: Event) -> None:
        raise RuntimeError("log sink full")

    result = await run_marbles(tap(explode, name="audit"), "a|")

    (event,) = result.events
    assert event.outcome == "ok"
    assert [(r.step, r.outcome, r.detail) for r in event.trace] == [
        ("audit", "tap_failed", "RuntimeError: log sink full")
    ]
