"""KafkaSource: read a topic as a consumer group, only as fast as credit allows.

The loop follows three rules:

- Fetch ``max_records = free credit``; below the low tide (a quarter of the
  window) wait for credit instead of polling once per freed credit.
- Pause partitions that hold too much of the window or whose uncommitted span
  is too long, and pause everything when no credit is free; keep polling (a
  paused ``getmany`` returns nothing) so the group keeps this member.
- Commit per partition only the contiguous completed watermark: every
  ``commit_interval``, when partitions are revoked, and in :meth:`aclose`.
  Completions of revoked partitions are ignored (their tracker is retired).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamflow.errors import TransportBroken, TransportRetriable
from streamflow.flow import CreditWindow
from streamflow.transports._base import Emit, Record
from streamflow.transports._offsets import OffsetTicket, PartitionOffsets, SourceStatistics
from streamflow.transports.kafka._clients import make_admin, make_consumer, start_client
from streamflow.transports.kafka._errors import map_kafka_error
from streamflow.transports.kafka._settings import KafkaSettings

__all__ = ["KafkaSource", "SourceStatistics"]

log = logging.getLogger("streamflow.transports.kafka")

# While stalled on credit, poll at least this often; far below aiokafka's
# max_poll_interval (300 s), after which the coordinator drops the member. When
# every partition is paused that poll discards what the fetcher had prefetched
# (it is fetched again on resume), so that poll is rarer.
_KEEPALIVE_S = 1.0
_KEEPALIVE_NO_CREDIT_S = 30.0
# Each fetch result is held in memory until it is consumed; a worker takes at
# most a window of records at a time, so large per-partition fetches only add
# memory (and allocator fragmentation) without adding throughput. Some brokers
# (Tansu) ignore the per-partition limit and honour only the total, so both are set.
_MAX_PARTITION_FETCH_BYTES = 256 * 1024
_FETCH_MAX_BYTES = 1024 * 1024
# How long one poll waits for records; the broker-side wait is fetch_max_wait_ms.
_FETCH_WAIT_MS = 100
_CREDIT_WAIT_S = 0.1
# Consecutive failed polls/commits before the source reports itself unhealthy.
_UNHEALTHY_AFTER = 3
# aiokafka retries a lost broker inside its own tasks and never raises to the
# poll loop, so liveness is probed: a metadata request fails at once when no
# broker answers.
_PROBE_INTERVAL_S = 2.0
_PROBE_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 10.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._source._on_assigned(assigned)


class KafkaSource:
    """Reads one topic as a member of a consumer group, against a credit window.

    Args:
        settings: broker address and pacing.
        topic: the topic to read.
        group: the consumer group (one per stage: ``{pipeline}.{stage}``).
        stage: the stage this source feeds (for error context).
    """

    def __init__(self, settings: KafkaSettings, topic: str, group: str, *, stage: str) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.stage = stage
        self.name = f"kafka://{topic}?group={group}"
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._trackers: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._end_offsets: dict[TopicPartition, int] = {}
        self._window: CreditWindow | None = None
        self._closed = False
        self._error_streak = 0
        self._broken: str | None = None
        self._last_error: str | None = None
        self._fetched = 0
        self._commits = 0
        self._pauses = 0
        self._resumes = 0
        self._end_refresh: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._unreachable: str | None = None
        self._coordinator_lost_at: float | None = None
        # Where each partition is read next, to catch a log that no longer reaches it.
        self._next: dict[TopicPartition, int] = {}
        self._range_check: asyncio.Task[None] | None = None
        self._out_of_range: str | None = None
        self._resets: list[str] = []
        self._joining: AIOKafkaConsumer | None = None
        self._stale_ends: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Connect and join the group (``run`` does this when needed).

        Raises:
            TransportError: the broker could not be reached or refused the consumer.
        """
        if self._consumer is not None:
            return
        consumer = make_consumer(
            self.settings,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.settings.auto_offset_reset,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.session_timeout_ms // 3),
            max_partition_fetch_bytes=_MAX_PARTITION_FETCH_BYTES,
            fetch_max_bytes=_FETCH_MAX_BYTES,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            fetch_min_bytes=self.settings.fetch_min_bytes,
        )
        # Liveness probes go through their own admin client: aiokafka offers no
        # public way to refresh a consumer's metadata or to see its coordinator.
        # It starts first, so the worker is live (the broker answers) while the
        # group join, which the coordinator may hold for seconds, is under way.
        admin = make_admin(self.settings)
        await start_client(self.settings, admin, topic=self.topic)
        self._admin = admin
        self._probe = asyncio.get_running_loop().create_task(self._probe_liveness())
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._joining = consumer
        try:
            await start_client(self.settings, consumer, topic=self.topic)
        except BaseException:
            # Failed, or cancelled by a stop while the coordinator held the join.
            self._joining = None
            self._probe.cancel()
            self._probe = None
            self._admin = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), _STOP_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), _STOP_TIMEOUT_S)
            raise
        self._consumer = consumer
        self._joining = None

    async def _probe_liveness(self) -> None:
        loop = asyncio.get_running_loop()
        while self._admin is not None and not self._closed:
            admin = self._admin
            # Metadata of the subscribed topic only (every topic of a cluster can be many).
            try:
                await asyncio.wait_for(admin.describe_topics([self.topic]), _PROBE_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._unreachable = map_kafka_error(exc, topic=self.topic).message
            else:
                self._unreachable = None
            # The group needs a coordinator; without one for a session timeout the
            # member is gone even if the process still runs.
            try:
                await asyncio.wait_for(admin.find_coordinator(self.group), _PROBE_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError):
                if self._coordinator_lost_at is None:
                    self._coordinator_lost_at = loop.time()
            else:
                self._coordinator_lost_at = None
            await asyncio.sleep(_PROBE_INTERVAL_S)

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit records against credit until ``stop`` is set.

        Args:
            emit: called with each record and its ticket (on the loop thread).
            window: the credit window; one credit per record.
            stop: set to stop fetching (what was emitted is still committed on release).

        Raises:
            TransportBroken: the consumer hit an error that retrying will not fix.
        """
        if not await self._start_unless_stopped(stop):
            return
        consumer = self._consumer
        assert consumer is not None
        self._window = window
        loop = asyncio.get_running_loop()
        low_tide = max(1, window.size // 4)
        poll_cap = self.settings.max_poll_records or window.size
        last_poll = last_commit = loop.time()
        make_record = Record
        make_ticket = OffsetTicket
        trackers = self._trackers
        while not stop.is_set():
            if self._out_of_range is not None:
                raise TransportBroken(self._out_of_range, topic=self.topic, stage=self.stage)
            now = loop.time()
            if now - last_commit >= self.settings.commit_interval:
                await self.commit()
                self._maybe_refresh_end_offsets()
                self._maybe_check_ranges()
                last_commit = now
            free = window.available
            if free < low_tide and window.in_use:
                # Not worth a fetch yet: wait for credit, but poll now and then so
                # the coordinator keeps counting this member as alive.
                self._apply_pauses(free)
                await window.wait(low_tide, timeout=_CREDIT_WAIT_S)
                free = window.available
                keepalive = _KEEPALIVE_S if free else _KEEPALIVE_NO_CREDIT_S
                if free < low_tide and loop.time() - last_poll < keepalive:
                    continue
            if stop.is_set():
                break
            allowed = self._apply_pauses(free)
            capped = free and not allowed and consumer.assignment()
            if capped and loop.time() - last_poll < _KEEPALIVE_NO_CREDIT_S:
                # Every partition is at its in-flight or span bound: wait for a completion.
                await window.wait(free + 1, timeout=_CREDIT_WAIT_S)
                continue
            try:
                if free and allowed:
                    # Naming the partitions leaves the prefetched results of paused
                    # ones alone; a plain getmany would discard them.
                    batch = await consumer.getmany(
                        *allowed, timeout_ms=_FETCH_WAIT_MS, max_records=min(free, poll_cap)
                    )
                else:
                    batch = await consumer.getmany(
                        timeout_ms=0 if consumer.assignment() else _FETCH_WAIT_MS,
                        max_records=max(free, 1),
                    )
            except (KafkaError, OSError) as exc:
                await self._poll_failed(exc)
                continue
            last_poll = loop.time()
            self._error_streak = 0
            for tp, records in batch.items():
                tracker = trackers.get(tp)
                if tracker is None:
                    continue
                if tracker.watermark < 0:
                    # The first fetch starts at the committed offset (or the reset
                    # point), so that is where the watermark starts too.
                    tracker.watermark = records[0].offset
                for message in records:
                    window.take()
                    tracker.add(message.offset)
                    emit(
                        make_record(
                            value=message.value if message.value is not None else b"",
                            origin=f"{tp.topic}/{tp.partition}/{message.offset}",
                            key=message.key,
                            headers=tuple(message.headers),
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=message.offset,
                        ),
                        make_ticket(window, tracker, message.offset),
                    )
                self._next[tp] = records[-1].offset + 1
                self._fetched += len(records)

    async def _start_unless_stopped(self, stop: asyncio.Event) -> bool:
        """Start (join the group), or give up when ``stop`` is set first; True once started.

        The coordinator may hold a join for seconds (or, with the broker gone,
        for ever): a stop in that time must not wait for it.
        """
        if self._consumer is not None:
            return True
        starting = asyncio.ensure_future(self.start())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        if starting.cancelled():
            return False
        starting.result()
        return True

    def _apply_pauses(self, free: int) -> set[TopicPartition]:
        """Pause what must not be fetched now; return the assigned partitions left running."""
        consumer = self._consumer
        if consumer is None:
            return set()
        assigned = consumer.assignment()
        if free <= 0:
            want = set(assigned)
        else:
            cap = self._in_flight_cap(len(assigned))
            span = self.settings.max_uncommitted_per_partition
            want = set()
            for tp in assigned:
                tracker = self._trackers.get(tp)
                if tracker is not None and (tracker.in_flight >= cap or tracker.span >= span):
                    want.add(tp)
        current = consumer.paused()
        if want - current:
            consumer.pause(*(want - current))
            self._pauses += len(want - current)
        if current - want:
            consumer.resume(*(current - want))
            self._resumes += len(current - want)
        return set(assigned) - want

    def _in_flight_cap(self, partitions: int) -> int:
        if self.settings.max_in_flight_per_partition is not None:
            return self.settings.max_in_flight_per_partition
        size = self._window.size if self._window is not None else 1
        return max(1, size // max(1, partitions) * 2)

    async def _poll_failed(self, exc: BaseException) -> None:
        error = map_kafka_error(exc, topic=self.topic)
        self._last_error = error.message
        if not isinstance(error, TransportRetriable):
            self._broken = error.message
            raise TransportBroken(error.message, topic=self.topic, stage=self.stage) from exc
        self._error_streak += 1
        log.warning("poll of %s failed (%d in a row): %s", self.topic, self._error_streak, error)
        await asyncio.sleep(min(2.0, 0.1 * 2**self._error_streak))

    async def commit(self) -> None:
        """Commit each partition's completed watermark if it moved (errors are logged)."""
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {
            tp: t.watermark
            for tp, t in self._trackers.items()
            if t.watermark >= 0 and t.watermark > self._committed.get(tp, -1)
        }
        beyond = [tp for tp, offset in offsets.items() if offset > self._log_end(tp)]
        for tp in beyond:
            # The log ends before what was read from it (the broker lost it, or the
            # topic was recreated): committing would skip whatever is written next.
            del offsets[tp]
        if beyond:
            self._start_range_check(beyond)
        await self._commit(offsets)

    def _log_end(self, tp: TopicPartition) -> float:
        """The end of ``tp``'s log as the last fetch response said (infinite while unknown).

        Only the high watermark of a fetch response is trusted: some brokers (Tansu)
        answer a list-offsets request with the base offset of the last batch + 1.
        """
        consumer = self._consumer or self._joining
        end = consumer.highwater(tp) if consumer is not None else None
        if end is None or (tp in self._stale_ends and end == self._stale_ends[tp]):
            # A high watermark left from an earlier assignment of this partition says
            # nothing of the log now; only one a later fetch moved is current.
            return float("inf")
        return float(end)

    def _maybe_check_ranges(self) -> None:
        suspect = [
            tp
            for tp in self._trackers
            if (offset := self._next.get(tp, self._committed.get(tp))) is not None
            and offset > self._log_end(tp)
        ]
        if suspect:
            self._start_range_check(suspect)

    def _start_range_check(self, partitions: list[TopicPartition]) -> None:
        if self._range_check is not None and not self._range_check.done():
            return
        self._range_check = asyncio.get_running_loop().create_task(self._check_ranges(partitions))

    async def _check_ranges(self, partitions: list[TopicPartition]) -> None:
        """Apply ``offset_reset`` to partitions whose position lies outside their log."""
        consumer = self._consumer or self._joining
        positions = {
            tp: offset
            for tp in partitions
            if (offset := self._next.get(tp, self._committed.get(tp))) is not None
        }
        if consumer is None or not positions:
            return
        try:
            starts = await consumer.beginning_offsets(list(positions))
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("cannot check the offsets of %s: %s", self.topic, exc)
            return
        for tp, offset in positions.items():
            start = starts.get(tp)
            high = self._log_end(tp)
            end = int(high) if high != float("inf") else offset
            if start is None or start <= offset <= end:
                continue
            await self._reset(tp, offset, start, max(end, start))

    async def _reset(self, tp: TopicPartition, offset: int, start: int, end: int) -> None:
        where = f"{tp.topic}/{tp.partition}"
        policy = self.settings.offset_reset
        if policy == "fail":
            self._out_of_range = self._broken = (
                f"offset {offset} of {where} (group {self.group}) lies outside the log, "
                f"which holds offsets {start} to {end}: the log was truncated or the topic "
                "recreated; restart with --offset-reset earliest (read what the log holds) "
                "or latest (skip to its end)"
            )
            log.error("%s", self._out_of_range)
            return
        target = start if policy == "earliest" else end
        consumer = self._consumer or self._joining
        assert consumer is not None
        consumer.seek(tp, target)
        old = self._trackers.get(tp)
        if old is not None:
            # Completions of what was read from the lost log must not move the new watermark.
            old.live = False
        self._trackers[tp] = PartitionOffsets(-1)
        self._next.pop(tp, None)
        self._committed.pop(tp, None)
        note = (
            f"offset {offset} of {where} lay outside the log (offsets {start} to {end}); "
            f"reset to {target} ({policy})"
        )
        self._resets.append(note)
        log.warning("%s", note)
        await self._commit({tp: target})

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, OSError) as exc:
            error = map_kafka_error(exc, topic=self.topic)
            self._last_error = error.message
            self._error_streak += 1
            if not isinstance(error, TransportRetriable):
                self._broken = error.message
            log.warning("commit of %s failed: %s", self.topic, error)
            return
        self._commits += 1
        self._committed.update(offsets)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = {}
        for tp in revoked:
            tracker = self._trackers.get(tp)
            if tracker is not None and tracker.watermark > self._committed.get(tp, -1):
                offsets[tp] = tracker.watermark
        await self._commit(offsets)
        for tp in revoked:
            tracker = self._trackers.pop(tp, None)
            if tracker is not None:
                tracker.live = False
            self._committed.pop(tp, None)
            self._end_offsets.pop(tp, None)
            self._next.pop(tp, None)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # The first assignment can come while start() is still joining the group.
        consumer = self._consumer or self._joining
        for tp in assigned:
            # Unknown (-1) until the first fetch tells where reading resumed.
            self._trackers[tp] = PartitionOffsets(-1)
            self._stale_ends.pop(tp, None)
            stale = consumer.highwater(tp) if consumer is not None else None
            if stale is not None:
                self._stale_ends[tp] = stale
            if consumer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    committed = await consumer.committed(tp)
                    if committed is not None:
                        self._committed[tp] = committed
        # Before the first fetch: a committed offset below the log's start is reset,
        # or stops the worker, by the policy. One past its end shows in the first
        # fetch's high watermark and is handled then (never silently skipped).
        known = [tp for tp in assigned if tp in self._committed]
        if known:
            await self._check_ranges(known)

    def _maybe_refresh_end_offsets(self) -> None:
        # Fetch responses carry the high watermark, but paused partitions are not
        # fetched; ask for their end offsets in the background so lag stays true.
        consumer = self._consumer
        if consumer is None or not consumer.paused():
            return
        if self._end_refresh is not None and not self._end_refresh.done():
            return
        self._end_refresh = asyncio.get_running_loop().create_task(
            self._refresh_end_offsets(list(consumer.paused()))
        )

    async def _refresh_end_offsets(self, partitions: list[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            self._end_offsets.update(await consumer.end_offsets(partitions))

    async def aclose(self) -> None:
        """Commit the final watermarks, then leave the group; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for task in (self._end_refresh, self._probe, self._range_check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin.close(), _STOP_TIMEOUT_S)
        consumer = self._consumer
        if consumer is None:
            return
        try:
            await self.commit()
        finally:
            for tracker in self._trackers.values():
                tracker.live = False
            # With no broker, leaving the group retries forever; shutdown must not.
            stopping = asyncio.get_running_loop().create_task(consumer.stop())
            done, _ = await asyncio.wait({stopping}, timeout=_STOP_TIMEOUT_S)
            if not done:
                stopping.cancel()
                stopping.add_done_callback(_consume_outcome)
                log.warning("the consumer of %s did not stop in time (broker lost?)", self.topic)
            elif not stopping.cancelled() and stopping.exception() is not None:
                log.warning(
                    "stopping the consumer of %s failed: %r", self.topic, stopping.exception()
                )

    def healthy(self) -> tuple[bool, str]:
        """Return (ok, reason): is this source alive (liveness)?

        Alive means the broker answers and nothing is broken; a source still
        joining its group is alive (see :meth:`ready`). False when it never
        reached the broker, lost it or its group's coordinator, or keeps failing.
        """
        if self._broken is not None:
            return False, f"consumer of {self.topic} is broken: {self._broken}"
        if self._closed:
            return False, f"consumer of {self.topic} is closed"
        if self._admin is None:
            return False, f"consumer of {self.topic} has not reached the broker yet"
        if self._unreachable is not None:
            return False, f"consumer of {self.topic} lost its broker: {self._unreachable}"
        lost_at = self._coordinator_lost_at
        if (
            lost_at is not None
            and asyncio.get_running_loop().time() - lost_at
            > self.settings.session_timeout_ms / 1000
        ):
            return False, f"consumer of {self.topic} lost its group {self.group} (no coordinator)"
        if self._error_streak >= _UNHEALTHY_AFTER:
            return False, (
                f"consumer of {self.topic}: {self._error_streak} failed calls in a row "
                f"(last: {self._last_error})"
            )
        if self._consumer is None:
            return True, f"broker answers; joining group {self.group} for {self.topic}"
        assigned = len(self._consumer.assignment())
        reason = f"member of group {self.group}, {assigned} partition(s) of {self.topic}"
        if self._resets:
            reason += f"; {len(self._resets)} offset reset(s), last: {self._resets[-1]}"
        return True, reason

    def ready(self) -> tuple[bool, str]:
        """Return (ok, reason): alive, a member of its group and consuming (readiness).

        A member with no partition (more members than partitions) is ready: it
        stands by and takes partitions over when another member leaves.
        """
        ok, reason = self.healthy()
        if not ok:
            return False, reason
        if self._consumer is None:
            return False, f"consumer of {self.topic} is joining group {self.group}"
        return True, reason

    @property
    def resets(self) -> list[str]:
        """Each offset reset applied by ``offset_reset``, in order (for /healthz and logs)."""
        return list(self._resets)

    def lag(self) -> list[tuple[str, int, float]]:
        """Return ``(topic, partition, end offset - committed offset)`` per assigned partition."""
        consumer = self._consumer
        if consumer is None:
            return []
        rows = []
        for tp in sorted(self._trackers, key=lambda t: t.partition):
            end = max(consumer.highwater(tp) or 0, self._end_offsets.get(tp, 0))
            committed = self._committed.get(tp, 0)
            rows.append((tp.topic, tp.partition, float(max(0, end - committed))))
        return rows

    def committed(self) -> list[tuple[str, int, float]]:
        """Return ``(topic, partition, committed offset)`` per assigned partition."""
        return [
            (tp.topic, tp.partition, float(offset))
            for tp, offset in sorted(self._committed.items(), key=lambda kv: kv[0].partition)
        ]

    def paused_count(self) -> int:
        """Return how many partitions are paused right now."""
        return len(self._consumer.paused()) if self._consumer is not None else 0

    def statistics(self) -> SourceStatistics:
        """Return a snapshot: fetched, commits, pauses, resumes, per-partition load."""
        return SourceStatistics(
            fetched=self._fetched,
            commits=self._commits,
            pauses=self._pauses,
            resumes=self._resumes,
            partitions={
                f"{tp.topic}/{tp.partition}": (t.in_flight, t.span)
                for tp, t in self._trackers.items()
            },
        )


def _consume_outcome(task: asyncio.Task[None]) -> None:
    # Retrieve the result of an abandoned stop, so asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()
