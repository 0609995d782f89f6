"""Where a step runs, and how it reports what metrics need, without importing metrics.

A runtime opens a :class:`RunScope` around a run (its metrics hooks and its
limiter registry); operators and model clients reach it through the context
of the task they run in, so two pipelines in one process never see each
other's hooks. Tasks copy the context when they are created, so a model call
made inside a stage's step sees that stage in ``current_stage`` and that
run's scope in :func:`current_scope`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamflow.ops._limiter_registry import LimiterRegistry

__all__ = [
    "Instrumentation",
    "RunScope",
    "StagePlace",
    "StageVar",
    "current_scope",
    "current_stage",
    "instrumentation",
    "run_scope",
]


class StagePlace:
    """Where one worker is: the stage of the event it is running now.

    Attributes:
        stage: the stage, or None between events.
    """

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage: str | None = None


class StageVar:
    """The stage whose step is running: a context variable, read with :meth:`get`.

    A runner sets it per event and stage (:meth:`set`, :meth:`reset`), or, for
    a long-lived worker that moves every event from stage to stage, once to the
    worker's :class:`StagePlace` (:meth:`follow`), which it then updates in
    place: setting a context variable four times per event costs more than the
    step's own bookkeeping. A task a step starts sees what the step sees, so
    with a place it sees the stage its worker is in when it asks; the tasks a
    step awaits ask while the step runs.
    """

    def __init__(self, name: str) -> None:
        self._var: ContextVar[str | StagePlace | None] = ContextVar(name, default=None)

    def get(self) -> str | None:
        """The stage now (None outside a pipeline run)."""
        value = self._var.get()
        return value.stage if isinstance(value, StagePlace) else value

    def set(self, stage: str | None) -> Token[str | StagePlace | None]:
        """Set the stage in the current context; returns the token for :meth:`reset`."""
        return self._var.set(stage)

    def reset(self, token: Token[str | StagePlace | None]) -> None:
        """Undo the :meth:`set` that returned ``token``."""
        self._var.reset(token)

    def follow(self, place: StagePlace) -> None:
        """From now on, in the current context, the stage is wherever ``place`` says."""
        self._var.set(place)


current_stage = StageVar("streamflow_stage")
"""The stage whose step is running (None outside a pipeline run)."""


@dataclass
class Instrumentation:
    """Callbacks for facts only a step can see; each is a no-op until set.

    Attributes:
        model_request: called as (stage, model, status) for every model HTTP attempt.
        rate_limit_wait: called as (stage, limiter name, seconds) after a wait.
    """

    model_request: Callable[[str, str, str], None] | None = None
    rate_limit_wait: Callable[[str, str, float], None] | None = None

    def report_model_request(self, model: str, status: str) -> None:
        """Report one model request of the current stage."""
        if self.model_request is not None:
            self.model_request(current_stage.get() or "unknown", model, status)

    def report_rate_limit_wait(self, limiter: str, seconds: float) -> None:
        """Report time the current stage waited on a rate limiter."""
        if self.rate_limit_wait is not None:
            self.rate_limit_wait(current_stage.get() or "unknown", limiter, seconds)


@dataclass
class RunScope:
    """What one run lends to the steps it runs: its hooks and its limiter registry.

    Attributes:
        instrumentation: the run's metrics hooks.
        limiters: the limiter registry of the runtime the run belongs to, which
            :func:`~streamflow.ops.shared_limiter` handles draw from (None: the
            registry for code outside any runtime).
    """

    instrumentation: Instrumentation = field(default_factory=Instrumentation)
    limiters: LimiterRegistry | None = None


_scope: ContextVar[RunScope | None] = ContextVar("streamflow_run_scope", default=None)


def current_scope() -> RunScope | None:
    """The scope of the run whose step is running (None outside a run)."""
    return _scope.get()


@contextmanager
def run_scope(scope: RunScope) -> Iterator[RunScope]:
    """Make ``scope`` the current one in this context (and the tasks started in it).

    Args:
        scope: the run's scope.

    Returns:
        A context manager yielding ``scope``; the previous scope comes back on exit.
    """
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


class _CurrentInstrumentation(Instrumentation):
    """Reports to the hooks of the run the caller is in; outside a run, to its own."""

    def report_model_request(self, model: str, status: str) -> None:
        scope = _scope.get()
        hooks = scope.instrumentation if scope is not None else None
        Instrumentation.report_model_request(hooks or self, model, status)

    def report_rate_limit_wait(self, limiter: str, seconds: float) -> None:
        scope = _scope.get()
        hooks = scope.instrumentation if scope is not None else None
        Instrumentation.report_rate_limit_wait(hooks or self, limiter, seconds)


instrumentation: Instrumentation = _CurrentInstrumentation()
"""Where steps report: the running pipeline's hooks (its own callbacks outside any run)."""
