"""Where a step runs, and how it reports what metrics need, without importing metrics.

The runtime sets the hooks; operators and model clients call them. Tasks copy
the context when they are created, so a model call made inside a stage's
step sees that stage in ``current_stage``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["Instrumentation", "current_stage", "instrumentation"]

current_stage: ContextVar[str | None] = ContextVar("streamflow_stage", default=None)
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
