"""Runtime: what one embedding of streamflow owns, instead of the process owning it.

A :class:`Runtime` is passed to :func:`~streamflow.runtime.run_flow` and to
:func:`streamflow.open`. It holds the limiter registry its runs share and
says whether runs may tune the garbage collector. Each run opens a
:class:`~streamflow.ops.RunScope` from it, with that run's metrics hooks, in
the context its steps run in; nothing is installed process-wide, so two
pipelines in one process share only the runtime (and so the limiters) they
are given.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamflow.metrics import PipelineMetrics
from streamflow.ops import Instrumentation, LimiterRegistry, RunScope, run_scope
from streamflow.runtime._gc import collector_tuned
from streamflow.runtime._limiters import limiters_from_env

__all__ = ["Runtime"]


class Runtime:
    """The state a set of runs shares: limiters and the collector policy.

    Args:
        tune_gc: let runs freeze pre-run objects out of the garbage collector
            and raise its young threshold while they last (see
            :mod:`streamflow.runtime._gc`). The ``streamflow`` CLI turns it on;
            it is off by default so a library call leaves its host's collector alone.
        limiters: the limiter registry shared by the runs of this runtime
            (default: a new one, counting in this process unless
            ``STREAMFLOW_LIMITER_URL`` names a Redis that every process shares).

    Attributes:
        tune_gc: as given.
        limiters: the runtime's limiter registry.

    Raises:
        ConfigError: ``STREAMFLOW_LIMITER_URL`` is not usable.
    """

    def __init__(self, *, tune_gc: bool = False, limiters: LimiterRegistry | None = None) -> None:
        self.tune_gc = tune_gc
        self.limiters = limiters if limiters is not None else limiters_from_env()

    def hooks(self, metrics: PipelineMetrics | None) -> Instrumentation:
        """Return the metrics hooks of a run that reports to ``metrics``."""
        if metrics is None:
            return Instrumentation()
        return Instrumentation(
            model_request=metrics.model_request, rate_limit_wait=metrics.rate_limit_wait
        )

    @contextlib.asynccontextmanager
    async def running(self, metrics: PipelineMetrics | None) -> AsyncIterator[RunScope]:
        """Open one run's scope (and, if asked, collector tuning) for the block.

        The limiter registry stays connected while the block runs.

        Args:
            metrics: the run's collectors, if any.

        Returns:
            An async context manager yielding the run's scope.

        Raises:
            ConfigError: the limiter backend cannot be reached.
        """
        scope = RunScope(instrumentation=self.hooks(metrics), limiters=self.limiters)
        async with self.limiters.opened():
            with collector_tuned(self.tune_gc), run_scope(scope):
                yield scope

    def __repr__(self) -> str:
        return f"Runtime(tune_gc={self.tune_gc}, limiters={self.limiters!r})"
