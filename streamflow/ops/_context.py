"""Where a step runs, and how it reports what metrics need, without importing metrics.

The runtime sets the hooks; operators and model clients call them. Tasks copy
the context when they are created, so a model call made inside a stage's
step sees that stage in ``current_stage``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = ["Instrumentation", "StagePlace", "StageVar", "current_stage", "instrumentation"]


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
    """Callbacks for facts only a step can see; no-ops until a runtime sets them.

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


instrumentation = Instrumentation()
"""The process-wide hooks (one runtime per process sets them)."""
