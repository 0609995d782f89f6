"""Every billed model call on the trace of the event it was made for.

A step that calls models runs under :func:`traced_calls`, which opens a
:class:`CallLedger` in the step's context; the model client notes every HTTP
attempt in it. What the step's own record cannot carry becomes trace records
of their own, one per attempt, with model, tokens and cost:

- when the step succeeds, the attempts that failed (429s, 5xx, timeouts,
  answers that did not validate: a billed answer is billed either way); the
  attempts that succeeded are already on the step's record, from the usage
  its backend returned;
- when the step fails, or is cancelled (a step timeout, a loop timeout),
  every attempt: the step's failure record carries no usage.

So the tokens on an event's trace add up to what the endpoint billed for it,
and so do ``streamflow_model_tokens_total`` and the cost, which are counted
from trace records.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from operators.models._results import RequestInfo
from streamflow.events import Event, StepRecord

__all__ = ["CallLedger", "current_ledger", "note_call", "traced_calls", "using_ledger"]

StepFn = Callable[[Event], Awaitable[Event]]


class CallLedger:
    """The model attempts of one step on one event.

    Attributes:
        step: the step's name (the name its trace records carry).
    """

    __slots__ = ("_calls", "step")

    def __init__(self, step: str) -> None:
        self.step = step
        self._calls: list[tuple[StepRecord, bool]] = []

    def note(self, info: RequestInfo, *, accounted: bool) -> None:
        """Note one attempt; ``accounted`` when its usage went back to the caller."""
        number = len(self._calls) + 1
        status = info.status if info.http_status is None else f"{info.http_status}"
        why = f" {info.error}" if info.error else ""
        record = StepRecord.timed(
            self.step,
            info.started_at,
            info.latency_s,
            1,
            "ok" if accounted else "error",
            f"model call {number}: {status}{why}",
            model=info.model,
            tokens_in=info.tokens_in,
            tokens_out=info.tokens_out,
            cost_usd=info.cost_usd,
        )
        self._calls.append((record, accounted))

    def adopt(self, other: CallLedger, *, accounted_too: bool) -> None:
        """Take ``other``'s attempts (a batch's) as unaccounted ones of this ledger.

        Args:
            other: the ledger to take from.
            accounted_too: take its accounted attempts as well (the batch failed,
                so no result carries their usage); otherwise only the failed ones.
        """
        for record, accounted in other._calls:
            if accounted and not accounted_too:
                continue
            record.step = self.step
            self._calls.append((record, False))

    def absorb(self, inner: CallLedger, *, accounted: bool) -> None:
        """Take the attempts of a step run inside this one (see :func:`traced_calls`)."""
        self._calls.extend((record, accounted) for record, _ in inner._calls)

    def unaccounted(self) -> list[StepRecord]:
        """The attempts whose usage no result carries."""
        return [record for record, accounted in self._calls if not accounted]

    def everything(self) -> list[StepRecord]:
        """Every attempt."""
        return [record for record, _ in self._calls]

    def __len__(self) -> int:
        return len(self._calls)


_current: ContextVar[CallLedger | None] = ContextVar("streamflow_model_calls", default=None)


def current_ledger() -> CallLedger | None:
    """The ledger of the step running in this context (None outside :func:`traced_calls`)."""
    return _current.get()


def note_call(info: RequestInfo, *, accounted: bool) -> None:
    """Note a model attempt in the current step's ledger, if a step keeps one."""
    ledger = _current.get()
    if ledger is not None:
        ledger.note(info, accounted=accounted)


@contextmanager
def using_ledger(ledger: CallLedger | None) -> Iterator[CallLedger | None]:
    """Note the attempts made inside the block in ``ledger`` (None: in none)."""
    token = _current.set(ledger)
    try:
        yield ledger
    finally:
        _current.reset(token)


def traced_calls(fn: StepFn, step: str) -> StepFn:
    """Wrap a step so that every model attempt it makes lands on the event's trace.

    ::

        map_async(traced_calls(answer_ticket, "answer"), name="answer", retry=...)

    Args:
        fn: the step, ``Event -> Event``.
        step: its name (as given to map_async).

    Returns:
        The step, noting its model attempts: on success the failed ones go
        before its own record; on failure or cancellation every one goes on
        the trace of the event it was called with, before the failure record
        the runtime adds. Steps run inside a traced step (the drafts of a
        regenerate loop) hand their attempts up, so a loop that times out
        keeps the calls of its earlier rounds too.
    """

    @functools.wraps(fn)
    async def run(event: Event) -> Event:
        parent = _current.get()
        ledger = CallLedger(step)
        token = _current.set(ledger)
        try:
            result = await fn(event)
        except Exception:
            if len(ledger):
                # In place: the event the runtime marks failed is this one, and its
                # trace is this path's own.
                event.trace.extend(ledger.everything())
                if parent is not None:
                    parent.absorb(ledger, accounted=True)  # on the trace that flows on
            raise
        except BaseException:
            # Cancelled: an enclosing step (a regenerate loop) fails with it and
            # puts the attempts on the event it was given; otherwise this one does.
            if len(ledger):
                if parent is not None:
                    parent.absorb(ledger, accounted=False)
                else:
                    event.trace.extend(ledger.everything())
            raise
        finally:
            _current.reset(token)
        extra = ledger.unaccounted()
        if extra and isinstance(result, Event):
            trace = result.trace
            at = len(trace)
            if trace and trace[-1].step == step and result is not event:
                at -= 1  # before the step's own record, which map_async times
            trace[at:at] = extra
        if parent is not None and len(ledger):
            # Carried by this step's result; the enclosing step needs them only if
            # it fails and drops that result.
            parent.absorb(ledger, accounted=True)
        return result

    return run
