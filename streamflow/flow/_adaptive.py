"""Adaptive concurrency: find how many calls an endpoint takes at once (AIMD).

The limit creeps up while calls succeed and is cut when the endpoint pushes
back (429) or its latency climbs past a tolerance over the best seen, as TCP
does with its congestion window. ``map_async(concurrency=AdaptiveConcurrency())``
reads the limit each time it starts a call.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamflow.errors import ConfigError, RateLimited

__all__ = ["AdaptiveConcurrency", "AdaptiveStatistics"]


@dataclass(frozen=True)
class AdaptiveStatistics:
    """A snapshot of an adaptive limit.

    Attributes:
        limit: calls allowed in flight now.
        peak_limit: the highest the limit has been.
        decreases: how many times the limit was cut.
        rate_limited: calls that came back with RateLimited.
        slow: calls whose latency passed the tolerance.
        min_latency: the fastest successful call seen, in seconds.
    """

    limit: int
    peak_limit: int
    decreases: int
    rate_limited: int
    slow: int
    min_latency: float | None


class AdaptiveConcurrency:
    """An additive-increase, multiplicative-decrease limit on calls in flight.

    Each success adds ``increase / limit``, so the limit grows by about
    ``increase`` per round of calls rather than doubling each round. A 429 or
    a call slower than ``latency_tolerance`` times the fastest seen multiplies
    the limit by ``decrease``; calls that started before the last cut cannot
    cut again, so one overload costs one cut, not one per call in flight.
    """

    def __init__(
        self,
        initial: int = 8,
        *,
        min: int = 1,
        max: int = 256,
        increase: float = 1.0,
        decrease: float = 0.5,
        latency_tolerance: float | None = 2.0,
        decrease_on: tuple[type[BaseException], ...] = (RateLimited,),
    ) -> None:
        """Create a limit.

        Args:
            initial: the limit to start from.
            min: the limit never goes below this.
            max: the limit never goes above this.
            increase: growth per round of successful calls.
            decrease: factor applied on a cut, between 0 and 1.
            latency_tolerance: cut when a call takes longer than this times the
                fastest call seen; None to ignore latency.
            decrease_on: errors that mean "too much load" (default: 429).

        Raises:
            ConfigError: bounds out of order or factors out of range.
        """
        if not 1 <= min <= initial <= max:
            raise ConfigError(
                f"AdaptiveConcurrency needs 1 <= min <= initial <= max, got "
                f"min={min}, initial={initial}, max={max}"
            )
        if not 0 < decrease < 1:
            raise ConfigError(f"AdaptiveConcurrency.decrease must be in (0, 1), got {decrease}")
        if increase <= 0:
            raise ConfigError(f"AdaptiveConcurrency.increase must be > 0, got {increase}")
        if latency_tolerance is not None and latency_tolerance <= 1:
            raise ConfigError(
                f"AdaptiveConcurrency.latency_tolerance must be > 1, got {latency_tolerance}"
            )
        self.min = min
        self.max = max
        self.increase = increase
        self.decrease = decrease
        self.latency_tolerance = latency_tolerance
        self.decrease_on = decrease_on
        self._value = float(initial)
        self.limit = initial
        self.peak_limit = initial
        self.decreases = 0
        self.rate_limited = 0
        self.slow = 0
        self.min_latency: float | None = None
        self._cut_at = float("-inf")

    def on_success(self, started: float, finished: float) -> None:
        """Account a call that succeeded; times are on the loop clock."""
        latency = finished - started
        best = self.min_latency
        if best is None or latency < best:
            self.min_latency = latency
        elif (
            self.latency_tolerance is not None
            and best > 0
            and latency > self.latency_tolerance * best
        ):
            self.slow += 1
            self._cut(started, finished)
            return
        self._set(self._value + self.increase / self._value)

    def on_failure(self, started: float, finished: float, error: BaseException) -> None:
        """Account a call that failed; only overload errors cut the limit."""
        if isinstance(error, self.decrease_on):
            self.rate_limited += 1
            self._cut(started, finished)

    def _cut(self, started: float, finished: float) -> None:
        if started < self._cut_at:
            return
        self._cut_at = finished
        self.decreases += 1
        self._set(self._value * self.decrease)

    def _set(self, value: float) -> None:
        value = min(float(self.max), max(float(self.min), value))
        self._value = value
        self.limit = int(value)
        if self.limit > self.peak_limit:
            self.peak_limit = self.limit

    def statistics(self) -> AdaptiveStatistics:
        """Return a snapshot of the limit."""
        return AdaptiveStatistics(
            limit=self.limit,
            peak_limit=self.peak_limit,
            decreases=self.decreases,
            rate_limited=self.rate_limited,
            slow=self.slow,
            min_latency=self.min_latency,
        )

    def __repr__(self) -> str:
        return f"AdaptiveConcurrency(limit={self.limit}, min={self.min}, max={self.max})"
