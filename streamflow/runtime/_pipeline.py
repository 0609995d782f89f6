"""Pipeline and Stage: the declaration that runs in one process or across Kafka."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from streamflow.errors import ConfigError, TopologyError
from streamflow.events import DEFAULT_LIMITS, Event, RecordLimits
from streamflow.ops import EventOperator, Operator, as_operator, pipe
from streamflow.ops._gate import gate
from streamflow.ops._operator import check_ordering
from streamflow.ops._typed import compatible, type_name

if TYPE_CHECKING:
    # Only a type here: the review package imports this module.
    from streamflow.runtime.review import ReviewPolicy

__all__ = ["Pipeline", "Stage", "StageHooks"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass
class Stage:
    """One stage: an operator (or a list of them), run by its own consumer group in Kafka.

    Attributes:
        name: lowercase name; topics and groups are derived from it.
        operator: an Operator, a plain reactivex operator, or a list composed in order.
        concurrency: most events inside the stage at once (None: bounded by the window).
        input_model: the payload model the stage takes; a worker of the stage
            decodes each payload to it (a payload that does not fit is a dead
            letter naming the field). Default: what the step before hands on,
            from its return hint (or the pipeline's input model for the first
            stage), else what the stage's first typed step takes.
        payload_model: the model the stage's input is decoded to, set when
            the pipeline is built (None: payloads stay as decoded, dicts).
    """

    name: str
    operator: Operator | EventOperator | Sequence[Operator | EventOperator]
    concurrency: int | None = None
    input_model: type[BaseModel] | None = None
    op: Operator = field(init=False, repr=False)
    payload_model: type[Any] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"stage name {self.name!r} is not valid: use lowercase letters, digits, '_' "
                "or '-', starting with a letter"
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"stage '{self.name}': concurrency must be >= 1")
        if isinstance(self.operator, Sequence):
            self.op = pipe(*self.operator, name=self.name)
        else:
            self.op = as_operator(self.operator, name=self.name)


@dataclass(frozen=True)
class StageHooks:
    """How the runtime measures every stage (for metrics and summaries).

    Attributes:
        meter: makes the measuring function of a stage, called as (event,
            seconds inside, index of its first new trace record) as an active
            event leaves it.
    """

    meter: Callable[[str], Callable[[Event, float, int], None]] | None = None


class Pipeline:
    """A named sequence of stages, with its input model and topic names.

    Args:
        name: lowercase pipeline name; topics are ``{name}.in``, ``{name}.{stage}``,
            ``{name}.out``, ``{name}.dlq``, ``{name}.review``.
        stages: the stages in flow order.
        input_model: pydantic model every input payload must fit (else dead letter).
        key_field: payload field that becomes the event key (ordering, Kafka key).
        id_field: payload field that becomes the event id (else derived from position).
        summary_field: dotted payload path whose value groups the run summary.
        window: most events inside the pipeline (one process) or one worker at once.
        review: how a reviewer's rejection is reworked: the stage it goes back to and the
            payload field of the note (default: the stage that parked the event, and
            ``feedback``). See :class:`streamflow.runtime.review.ReviewPolicy`.
        limits: the record size and JSON depth every input must respect, and the
            bound of what is written (default: :data:`streamflow.events.DEFAULT_LIMITS`).
        input_topic: the topic the first stage reads, to plug into a topic that
            exists already (default: ``{name}.in``).
        output_topic: the topic the last stage writes (default: ``{name}.out``).

    Raises:
        ConfigError: bad names (of the pipeline, a stage or a topic), no stages,
            duplicate stage names, bad window, a rework stage that is not one of the stages.
        TopologyError: a stage asks for an order that an upstream stage breaks, or the
            window exceeds a buffer bound inside a stage.
    """

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        *,
        input_model: type[BaseModel] | None = None,
        key_field: str | None = None,
        id_field: str | None = "id",
        summary_field: str | None = None,
        window: int = 1024,
        review: ReviewPolicy | None = None,
        limits: RecordLimits | None = None,
        input_topic: str | None = None,
        output_topic: str | None = None,
    ) -> None:
        for role, topic in (("input_topic", input_topic), ("output_topic", output_topic)):
            if topic is not None and not _TOPIC.match(topic):
                raise ConfigError(
                    f"pipeline '{name}': {role} {topic!r} is not a valid Kafka topic name "
                    "(letters, digits, '.', '_' or '-', at most 249)"
                )
        if not _NAME.match(name):
            raise ConfigError(
                f"pipeline name {name!r} is not valid: use lowercase letters, digits, '_' or "
                "'-', starting with a letter"
            )
        if not stages:
            raise ConfigError(f"pipeline '{name}' has no stages; give at least one Stage")
        seen: set[str] = set()
        for stage in stages:
            if stage.name in seen:
                raise ConfigError(f"pipeline '{name}': stage name '{stage.name}' is used twice")
            if stage.name in ("in", "out", "dlq", "review"):
                raise ConfigError(
                    f"pipeline '{name}': stage name '{stage.name}' clashes with a topic suffix; "
                    "rename the stage"
                )
            seen.add(stage.name)
        if window < 1:
            raise ConfigError(f"pipeline '{name}': window must be >= 1, got {window}")
        rework_stage = review.rework_stage if review is not None else None
        if rework_stage is not None and rework_stage not in seen:
            raise ConfigError(
                f"pipeline '{name}': the review policy's rework_stage '{rework_stage}' is not a "
                "stage; its stages are " + ", ".join(s.name for s in stages)
            )
        self.name = name
        self.stages = list(stages)
        self._input_topic = input_topic
        self._output_topic = output_topic
        self.input_model = input_model
        self.key_field = key_field
        self.id_field = id_field
        self.summary_field = summary_field
        self.window = window
        self.review = review
        self.limits = limits or DEFAULT_LIMITS
        check_ordering([s.op for s in self.stages], where=f"pipeline '{name}'")
        _check_step_names(self.name, self.stages)
        _check_payload_types(self.name, self.stages, input_model)
        for stage in self.stages:
            for op in stage.op.walk():
                if op.capacity is not None and op.capacity < window:
                    raise TopologyError(
                        f"pipeline '{name}': window {window} exceeds the buffer bound "
                        f"{op.capacity} of '{op.name}' in stage '{stage.name}'; lower the window "
                        f"or raise that operator's capacity"
                    )

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, stages={[s.name for s in self.stages]})"

    # -- names -----------------------------------------------------------------

    def stage(self, name: str) -> Stage:
        """Return the stage called ``name``.

        Raises:
            ConfigError: no such stage (the message lists the stages).
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(
            f"pipeline '{self.name}' has no stage '{name}'; its stages are "
            + ", ".join(s.name for s in self.stages)
        )

    @property
    def input_topic(self) -> str:
        """The topic the first stage reads (``{name}.in`` unless named)."""
        return self._input_topic or f"{self.name}.in"

    @property
    def output_topic(self) -> str:
        """The topic the last stage writes (``{name}.out`` unless named)."""
        return self._output_topic or f"{self.name}.out"

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic."""
        return f"{self.name}.dlq"

    @property
    def review_topic(self) -> str:
        """The topic of events parked for a person."""
        return f"{self.name}.review"

    def topic_into(self, stage: str) -> str:
        """The topic stage ``stage`` reads."""
        index = self._index(stage)
        return self.input_topic if index == 0 else f"{self.name}.{self.stages[index - 1].name}"

    def topic_out_of(self, stage: str) -> str:
        """The topic stage ``stage`` writes."""
        index = self._index(stage)
        return self.output_topic if index == len(self.stages) - 1 else f"{self.name}.{stage}"

    def group(self, stage: str) -> str:
        """The consumer group of stage ``stage``."""
        self._index(stage)
        return f"{self.name}.{stage}"

    def topics(self) -> list[str]:
        """Every topic the pipeline uses, in flow order."""
        middle = [f"{self.name}.{s.name}" for s in self.stages[:-1]]
        return [self.input_topic, *middle, self.output_topic, self.dlq_topic, self.review_topic]

    def _index(self, stage: str) -> int:
        for index, candidate in enumerate(self.stages):
            if candidate.name == stage:
                return index
        self.stage(stage)
        raise AssertionError("unreachable")

    # -- composition -------------------------------------------------------------

    def operator(
        self, stages: Sequence[str] | None = None, *, capacity: int | None = None
    ) -> Operator:
        """Compose the named stages (default: all) into one reactivex operator, each gated.

        For ``reactivex.pipe`` users; ``run_flow`` runs the stages per event instead.

        Args:
            stages: the stage names to run, in flow order.
            capacity: bound of each stage's input channel (default: the window).
        """
        chosen = [self.stage(n) for n in stages] if stages is not None else self.stages
        gated = [
            gate(
                stage.op,
                concurrency=stage.concurrency or self.window,
                capacity=capacity or self.window,
                name=stage.name,
            )
            for stage in chosen
        ]
        return pipe(*gated, name=self.name)

    def mermaid(self) -> str:
        """Draw the pipeline as a Mermaid flowchart (stages, branches, topics)."""
        lines = ["flowchart LR", f'    src(["{self.input_topic}"])']
        previous = "src"
        for index, stage in enumerate(self.stages):
            node = f"s{index}"
            lines.append(f'    subgraph {node}_box["stage {stage.name}"]')
            first, last = _draw(stage.op, f"{node}", lines, indent="        ")
            lines.append("    end")
            lines.append(f"    {previous} --> {first}")
            previous = last
            if index < len(self.stages) - 1:
                topic = f"t{index}"
                lines.append(f'    {topic}[("{self.topic_out_of(stage.name)}")]')
                lines.append(f"    {previous} --> {topic}")
                previous = topic
        lines.append(f'    out(["{self.output_topic}"])')
        lines.append(f"    {previous} --> out")
        lines.append(f'    dlq(["{self.dlq_topic}"])')
        lines.append(f'    review(["{self.review_topic}"])')
        lines.append(f"    {previous} -. failed .-> dlq")
        lines.append(f"    {previous} -. review .-> review")
        return "\n".join(lines) + "\n"


def _check_payload_types(
    pipeline: str, stages: Sequence[Stage], input_model: type[BaseModel] | None
) -> None:
    """Check that each step takes what the step before it hands on; set each stage's model.

    Raises:
        TopologyError: naming both ends of the first mismatch and the fix.
    """
    current: type[Any] | None = input_model
    source = "the pipeline's input_model"
    for stage in stages:
        declared = stage.input_model
        if declared is not None:
            if not compatible(current, declared):
                raise TopologyError(
                    f"pipeline '{pipeline}': stage '{stage.name}' declares input_model "
                    f"{type_name(declared)}, but {source} hands on {type_name(current)}; "
                    "make them agree"
                )
            current, source = declared, f"stage '{stage.name}''s input_model"
        stage.payload_model = current if current is not None else _first_need(stage.op)
        current, source = _through(pipeline, stage.op, current, source)


def _first_need(op: Operator) -> type[Any] | None:
    if op.kind in ("chain", "stage"):
        for _, child in op.branches:
            need = _first_need(child)
            if need is not None or not child.keeps_payload:
                return need
        return None
    return op.payload_in


def _through(
    pipeline: str, op: Operator, current: type[Any] | None, source: str
) -> tuple[type[Any] | None, str]:
    """The payload type (and who made it) after ``op``, checking each step on the way."""
    if op.kind in ("chain", "stage"):
        for _, child in op.branches:
            current, source = _through(pipeline, child, current, source)
        return current, source
    if op.kind in ("route", "parallel"):
        after = {_through(pipeline, branch, current, source)[0] for _, branch in op.branches}
        if op.kind == "route":
            return (
                (after.pop(), f"the branches of '{op.name}'")
                if len(after) == 1
                else (
                    None,
                    f"'{op.name}'",
                )
            )
        return op.payload_out, f"'{op.name}'"
    if not compatible(current, op.payload_in):
        raise TopologyError(
            f"pipeline '{pipeline}': step '{op.name}' takes {type_name(op.payload_in)}, but "
            f"{source} hands on {type_name(current)}; make {source} return a "
            f"{type_name(op.payload_in)} (or change the hint of '{op.name}')"
        )
    if op.keeps_payload:
        return current, source
    return op.payload_out, f"step '{op.name}'"


def _check_step_names(pipeline: str, stages: Sequence[Stage]) -> None:
    """Raise TopologyError when two steps an event can pass through share a name.

    Traces, metrics and review decisions name steps, so a name must say which
    step it was. Steps on different branches of a ``route`` never see the same
    event, so they may share one; the branches of ``parallel`` may not.
    """
    where: dict[str, str] = {}

    def visit(op: Operator, stage: str, seen: dict[str, str]) -> dict[str, str]:
        if op.kind not in ("chain", "stage", "rx"):
            if op.name in seen:
                raise TopologyError(
                    f"pipeline '{pipeline}': two steps are named '{op.name}' (in stage "
                    f"'{seen[op.name]}' and stage '{stage}'); give one another name "
                    f"(name=...)"
                )
            seen = {**seen, op.name: stage}
        if op.kind == "route":
            merged = dict(seen)
            for _, branch in op.branches:
                merged.update(visit(branch, stage, seen))
            return merged
        for _, child in op.branches:
            seen = visit(child, stage, seen)
        return seen

    for stage in stages:
        where = visit(stage.op, stage.name, where)


def _draw(op: Operator, prefix: str, lines: list[str], indent: str) -> tuple[str, str]:
    """Append nodes for ``op``; return its entry and exit node ids."""
    label = op.name.replace('"', "'")
    if op.kind == "chain" and op.branches:
        first = last = ""
        for i, (_, child) in enumerate(op.branches):
            entry, exit_ = _draw(child, f"{prefix}_{i}", lines, indent)
            if i == 0:
                first = entry
            else:
                lines.append(f"{indent}{last} --> {entry}")
            last = exit_
        return first, last
    if op.kind in ("route", "parallel") and op.branches:
        split, join = f"{prefix}_split", f"{prefix}_join"
        shape = "{" + f'"{label}"' + "}" if op.kind == "route" else f'[/"{label}"\\]'
        lines.append(f"{indent}{split}{shape}")
        lines.append(f'{indent}{join}(("merge"))')
        for i, (branch_label, child) in enumerate(op.branches):
            entry, exit_ = _draw(child, f"{prefix}_b{i}", lines, indent)
            lines.append(f'{indent}{split} -- "{branch_label}" --> {entry}')
            lines.append(f"{indent}{exit_} --> {join}")
        return split, join
    node = f"{prefix}_n"
    lines.append(f'{indent}{node}["{label}<br/><small>{op.kind}</small>"]')
    return node, node
