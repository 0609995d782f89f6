"""Per-partition offset watermark: out-of-order completion, in-order commit.

Pure bookkeeping (no aiokafka), shared by the Kafka and the in-memory transports,
with the statistics both report.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from streamflow.flow import CreditWindow, Ticket

__all__ = ["OffsetTicket", "PartitionOffsets", "SourceStatistics"]


class PartitionOffsets:
    """Tracks fetched offsets of one partition and the contiguous completed watermark.

    The watermark is the next offset to read: one past the last offset below which
    every fetched record completed. Offsets are added in fetch order (increasing);
    gaps (compaction, transaction markers) are fine because only fetched offsets
    are tracked. Amortised O(1) per record.

    Attributes:
        watermark: the offset to commit (next to read).
        in_flight: fetched records not yet completed.
        live: False once the partition was revoked; completions are then ignored.
    """

    __slots__ = ("_done", "_order", "in_flight", "live", "watermark")

    def __init__(self, watermark: int) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self.watermark = watermark
        self.in_flight = 0
        self.live = True

    def add(self, offset: int) -> None:
        """Record a fetched offset (offsets arrive in increasing order)."""
        self._order.append(offset)
        self.in_flight += 1

    def complete(self, offset: int) -> None:
        """Mark ``offset`` done and advance the watermark over the completed prefix."""
        self.in_flight -= 1
        order = self._order
        if order and order[0] == offset:
            # The common in-order case never touches the set.
            order.popleft()
            self.watermark = offset + 1
            done = self._done
            while order and order[0] in done:
                head = order.popleft()
                done.discard(head)
                self.watermark = head + 1
        else:
            self._done.add(offset)

    @property
    def span(self) -> int:
        """Records fetched but not yet below the watermark (what a restart replays)."""
        return len(self._order)


class OffsetTicket(Ticket):
    """A ticket that marks its offset complete in the partition's live tracker."""

    __slots__ = ("_offset", "_tracker")

    def __init__(self, window: CreditWindow, tracker: PartitionOffsets, offset: int) -> None:
        super().__init__(window)
        self._tracker = tracker
        self._offset = offset

    def release(self) -> None:
        if self.released:
            return
        super().release()
        tracker = self._tracker
        # A retired tracker belongs to a revoked assignment: another member owns
        # that partition now and its watermark is no longer ours to move.
        if tracker.live:
            tracker.complete(self._offset)


@dataclass(frozen=True)
class SourceStatistics:
    """A snapshot of a Kafka (or memory) source.

    Attributes:
        fetched: records emitted.
        commits: successful offset commits.
        pauses: partitions paused (count of pause transitions).
        resumes: partitions resumed.
        partitions: per ``topic/partition``: (in flight, uncommitted span).
    """

    fetched: int
    commits: int
    pauses: int
    resumes: int
    partitions: dict[str, tuple[int, int]] = field(default_factory=dict)
