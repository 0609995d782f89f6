"""Draft, check, and draft again: the regenerate-on-failed-check loop, and an LLM judge step."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Literal, cast

from pydantic import BaseModel

from operators._payload import payload_text, read_field, read_model, write_fields
from operators._step import step_record
from operators.check import CheckOutcome, CheckResult, check, event_outcome, settle_check
from operators.generate import DraftAnswer, generate, read_passages
from operators.models._ledger import traced_calls
from operators.models._types import AnswerComposer, Judge
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Lane, Operator, map_async

__all__ = [
    "escalate_by_category",
    "generate_until_checked",
    "judge_answer",
]

_STRICTNESS: dict[str, int] = {"pass": 0, "review": 1, "fail": 2}

GenerateStep = Callable[[AnswerComposer, str], Operator]
CheckStep = Callable[[str], Operator]


def escalate_by_category(
    hard: Collection[str], *, field: str = "classification.label", rung: int = 1
) -> Callable[[Event], int]:
    """Start hard categories higher on the escalation ladder.

    Args:
        hard: categories that start at ``rung`` (the strong model); others start at 0.
        field: dotted payload path of the category.
        rung: the ladder index hard categories start at.

    Returns:
        A ``start`` function for :func:`generate_until_checked`.
    """
    chosen = frozenset(hard)

    def start(event: Event) -> int:
        return rung if read_field(event.payload, field) in chosen else 0

    return start


def judge_answer(
    judge: Judge,
    *,
    min_groundedness: float = 0.5,
    field: str = "check",
    answer_field: str = "answer",
    passages_field: str = "passages",
    question_fields: Sequence[str] = ("subject", "body", "text", "question"),
    on_fail: Literal["review", "dead_letter"] = "review",
    concurrency: int = 64,
    into: type[BaseModel] | None = None,
    name: str = "judge",
) -> Operator:
    """Ask a judge about answers the rule checks passed; it can only make the outcome stricter.

    ::

        in:   --a1(check=pass)--a2(check=pass)--|
        out:  --a1(pass)--------a2(review)------|   the judge asked for a person

    Put it after :func:`operators.check`, so the model is paid only for answers
    that passed the cheap rules. The judge's outcome (``pass``, ``review`` or
    ``fail``, from a :class:`~operators.models.llm.JudgeVerdict`; a plain
    Verdict counts as ``pass``) and a groundedness below ``min_groundedness``
    are merged into the CheckResult at ``field``: the stricter outcome wins,
    and the judge's reasons are added.

    Args:
        judge: the judge backend (an LLMJudge).
        min_groundedness: groundedness under which the answer fails.
        field: payload field of the CheckResult (read and rewritten).
        answer_field: payload field of the DraftAnswer.
        passages_field: payload field of the retrieved passages.
        question_fields: payload fields whose text is the question.
        on_fail: a failing answer goes to ``review`` or the dead letters.
        concurrency: events in flight at once.
        into: a payload model to turn the payload into, or None to keep its type.
        name: the step name in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.

    Raises:
        ConfigError: a threshold outside 0..1 or an unknown on_fail.
    """
    if not 0.0 <= min_groundedness <= 1.0:
        raise ConfigError(
            f"judge_answer: min_groundedness must be within 0..1, not {min_groundedness}"
        )
    if on_fail not in ("review", "dead_letter"):
        raise ConfigError(f"judge_answer: on_fail is 'review' or 'dead_letter', not {on_fail!r}")

    async def judge_draft(event: Event) -> Event:
        payload = event.payload
        draft = read_model(payload, answer_field, DraftAnswer)
        before = read_model(payload, field, CheckResult)
        if draft is None:
            result = CheckResult(outcome="fail", reasons=["no answer to judge"])
            record = step_record(name, outcome=event_outcome("fail", on_fail), detail="fail")
            return settle(event, write_fields(payload, {field: result}, into), result, record)
        verdict = await judge.judge(
            draft.text,
            read_passages(payload, passages_field),
            question=payload_text(payload, question_fields),
        )
        said: str = getattr(verdict, "outcome", "pass")
        outcome = cast(CheckOutcome, said) if said in _STRICTNESS else "review"
        reasons = list(verdict.reasons)
        if verdict.groundedness < min_groundedness:
            outcome = "fail"
            reasons.insert(
                0,
                f"judge found the answer not grounded: groundedness "
                f"{verdict.groundedness:.2f} < {min_groundedness:.2f}",
            )
        # The stricter outcome wins: a judge never passes what the rules doubted.
        merged = max(before.outcome if before else "pass", outcome, key=_STRICTNESS.__getitem__)
        result = CheckResult(
            outcome=merged,
            reasons=[*(before.reasons if before else []), *(reasons if outcome != "pass" else [])],
            redactions=dict(before.redactions) if before else {},
            groundedness=verdict.groundedness,
            judge=verdict.model,
        )
        record = step_record(
            name,
            outcome=event_outcome(merged, on_fail),
            model=verdict.model,
            tokens_in=verdict.tokens_in,
            tokens_out=verdict.tokens_out,
            cost_usd=verdict.cost_usd,
            detail=f"{said} groundedness={verdict.groundedness:.2f}",
        )
        return settle(event, write_fields(payload, {field: result}, into), result, record)

    def settle(event: Event, payload: object, result: CheckResult, record: object) -> Event:
        return settle_check(event, payload, result, record, step=name, on_fail=on_fail)

    return map_async(traced_calls(judge_draft, name), concurrency=concurrency, name=name)


def generate_until_checked(
    generate_step: GenerateStep | None = None,
    check_step: CheckStep | None = None,
    *,
    escalate: Sequence[AnswerComposer],
    start: Callable[[Event], int] | None = None,
    judge_step: CheckStep | None = None,
    max_rounds: int = 3,
    check_field: str = "check",
    concurrency: int = 16,
    timeout: float | None = None,
    name: str = "generate_checked",
) -> Operator:
    """Draft an answer, check it, and when the check fails draft again with its reasons.

    ::

        in:    --t1----------t2-------------------|
        round:   g#1 c#1 ok   g#1 c#1 fail g#2 c#2 ok     (g#2 on the next model up)
        out:   ----------t1-----------------------t2--|

    One async step per event runs up to ``max_rounds`` rounds of
    ``generate#n`` -> ``check#n`` (-> ``judge#n``). Each round writes its own
    trace records under those names, so cost per round, stage and category
    shows in the trace and the metrics. A round whose check *fails* is
    retried with the check's reasons handed to the composer as feedback, on
    the next model of ``escalate`` (a cheap model first, then a strong one);
    an answer the check sends to review goes to review at once. After the
    last round a failing answer goes where the check sends it (review, by
    default) with the reasons; an error that outlived its retries sends the
    event to the dead letters with the records of every round before it.

    Args:
        generate_step: ``(composer, step name) -> operator`` (default:
            :func:`operators.generate` with that composer and name).
        check_step: ``step name -> operator`` of the rule checks (default:
            :func:`operators.check` with that name).
        escalate: the composers in escalation order (cheap first).
        start: the index in ``escalate`` of an event's first round (for example
            :func:`escalate_by_category`); default 0.
        judge_step: ``step name -> operator`` run after a passing check (for
            example :func:`judge_answer` with an LLMJudge), or None.
        max_rounds: rounds at most (1 means no regeneration).
        check_field: payload field of the CheckResult.
        concurrency: events in their loop at once.
        timeout: seconds for the whole loop of one event.
        name: the step name of the loop in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.

    Raises:
        ConfigError: no composer, max_rounds < 1, or a step with no per-event form.
    """
    if not escalate:
        raise ConfigError("generate_until_checked: give at least one composer in escalate=")
    if max_rounds < 1:
        raise ConfigError(f"generate_until_checked: max_rounds must be >= 1, got {max_rounds}")
    ladder = list(escalate)
    make_generate: GenerateStep = generate_step or (lambda c, step: generate(c, name=step))
    make_check: CheckStep = check_step or (lambda step: check(name=step))
    # Each round's steps run per event, awaited inside the loop's own call, so a
    # timeout of the loop cancels the model call that is under way.
    rounds: list[tuple[list[Lane], Lane, Lane | None]] = []
    for n in range(1, max_rounds + 1):
        rounds.append(
            (
                [_per_event(make_generate(c, f"generate#{n}")) for c in ladder],
                _per_event(make_check(f"check#{n}")),
                _per_event(judge_step(f"judge#{n}")) if judge_step is not None else None,
            )
        )

    async def draft_until_checked(event: Event) -> Event:
        first = start(event) if start is not None else 0
        current = event
        for n, (generators, checker, judger) in enumerate(rounds, start=1):
            rung = min(max(first + n - 1, 0), len(ladder) - 1)
            current = await generators[rung](current)
            if not current.active:
                return current
            current = await checker(current)
            if current.active and judger is not None:
                current = await judger(current)
            if current.active:
                return current
            verdict = read_field(current.payload, f"{check_field}.outcome")
            if verdict != "fail":
                return current
            if n == max_rounds:
                if max_rounds > 1 and current.reason:
                    reason = f"check still failing after {n} drafts: {current.reason}"
                    return current.evolve(reason=reason)
                return current
            # Back on the path: the next draft reads the failed check as feedback.
            current = current.evolve(outcome="ok", reason=None, error=None)
        return current

    return map_async(
        traced_calls(draft_until_checked, name),
        concurrency=concurrency,
        timeout=timeout,
        name=name,
    )


def _per_event(op: Operator) -> Lane:
    if op.lane is None:
        raise ConfigError(
            f"generate_until_checked: step '{op.name}' has no per-event form; give an "
            "unordered step (such as operators.generate, check or judge_answer)"
        )
    return op.lane()
