"""`streamflow review list | approve | reject`: decide on events parked for a person."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamflow.cli import cli, pipeline_argument
from streamflow.cli._console import printable
from streamflow.cli._kafka import BROKER_ENV, broker_option, settings_for
from streamflow.cli._load import load_pipeline
from streamflow.events import Event, dumps
from streamflow.runtime import Pipeline
from streamflow.runtime._report import lookup_field
from streamflow.runtime.review import (
    FileReviewQueue,
    KafkaReviewQueue,
    ReviewResult,
    parked_stage,
)

__all__ = ["review", "review_rows"]

_PREVIEW = 60

output_option = click.option(
    "--output",
    "-o",
    "output_path",
    default=None,
    help="Output file of an in-process run (its review file sits beside it).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _queue(
    pipeline: str, output_path: str | None, broker: str | None
) -> FileReviewQueue | KafkaReviewQueue:
    loaded = load_pipeline(pipeline)
    if output_path is not None and broker is not None:
        raise click.UsageError("give --output (files) or --broker (Kafka), not both")
    if output_path is not None:
        return FileReviewQueue(loaded, output_path)
    named = os.environ.get(BROKER_ENV) or os.environ.get("STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS")
    if broker is None and not named:
        raise click.UsageError(
            f"where is the review queue? pass --output OUT.jsonl for an in-process run, "
            f"or --broker HOST:PORT (or set {BROKER_ENV}) for Kafka"
        )
    return KafkaReviewQueue(loaded, settings_for(broker))


def _answer(payload: Any) -> str | None:
    answer = lookup_field(payload, "answer")
    if answer is None:
        return None
    text = lookup_field(answer, "text") if not isinstance(answer, str) else answer
    return None if text is None else " ".join(str(text).split())


def review_rows(pipeline: Pipeline, events: list[Event]) -> list[dict[str, Any]]:
    """Summarise parked events for a table or JSON: id, key, category, stage, reason, answer.

    Args:
        pipeline: the pipeline (its ``summary_field`` gives the category).
        events: parked events.

    Returns:
        One dict per event, in the given order.
    """
    rows = []
    for event in events:
        category = (
            lookup_field(event.payload, pipeline.summary_field) if pipeline.summary_field else None
        )
        rows.append(
            {
                "id": event.id,
                "key": event.key,
                "category": None if category is None else str(category),
                "stage": parked_stage(pipeline, event),
                "reason": event.reason,
                "answer": _answer(event.payload),
                "created_at": event.created_at,
            }
        )
    return rows


def _cell(value: object, *, preview: bool = False) -> Text:
    """A table cell that is text, never rich markup."""
    text = printable(value)
    if preview and len(text) > _PREVIEW:
        text = text[: _PREVIEW - 1] + "…"
    return Text(text)


@cli.group()
def review() -> None:
    """List, approve or reject events parked for a person."""


@review.command("list")
@pipeline_argument
@output_option
@broker_option
@json_option
def review_list(pipeline: str, output_path: str | None, broker: str | None, as_json: bool) -> None:
    """Show the events of PIPELINE that wait for a decision."""
    queue = _queue(pipeline, output_path, broker)
    events = queue.pending() if isinstance(queue, FileReviewQueue) else asyncio.run(queue.pending())
    rows = review_rows(queue.pipeline, events)
    if as_json:
        click.echo(dumps(rows).decode())
        return
    console = Console()
    if not console.is_terminal:
        # Piped or captured output has no width of its own; do not squeeze the columns.
        console = Console(width=160)
    if not rows:
        console.print("nothing waits for review")
        return
    table = Table(
        title=Text(f"{queue.pipeline.name}: {len(rows)} waiting for review"),
        title_justify="left",
    )
    table.add_column("id", no_wrap=True)
    table.add_column("key", no_wrap=True)
    if queue.pipeline.summary_field:
        table.add_column(queue.pipeline.summary_field.rsplit(".", 1)[0])
    table.add_column("stage")
    table.add_column("reason")
    table.add_column("answer")
    for row in rows:
        cells = [_cell(row["id"]), _cell(row["key"])]
        if queue.pipeline.summary_field:
            cells.append(_cell(row["category"]))
        cells += [
            _cell(row["stage"]),
            _cell(row["reason"], preview=True),
            _cell(row["answer"], preview=True),
        ]
        table.add_row(*cells)
    console.print(table)


def _report(result: ReviewResult, as_json: bool) -> None:
    decision = result.decision
    if as_json:
        click.echo(
            dumps(
                {
                    "id": decision.id,
                    "decision": decision.decision,
                    "note": decision.note,
                    "sent_to": result.sent_to,
                    "outcome": result.outcome,
                }
            ).decode()
        )
        return
    where = "the output" if result.sent_to == "output" else f"stage {result.sent_to}"
    line = f"{printable(decision.id)}: {decision.decision}, sent to {where}"
    if result.outcome is not None and result.sent_to != "output":
        line += f"; it came out {result.outcome}"
        if result.event.reason:
            line += f" ({printable(result.event.reason)})"
    click.echo(line)


@review.command("approve")
@click.argument("event_id", metavar="ID")
@pipeline_argument
@output_option
@broker_option
@click.option("--note", default=None, help="Kept in the event's trace.")
@json_option
def review_approve(
    event_id: str,
    pipeline: str,
    output_path: str | None,
    broker: str | None,
    note: str | None,
    as_json: bool,
) -> None:
    """Approve event ID: it goes on unchanged from where it was parked.

    Parked by the last stage, it is written to the output. Parked earlier (a
    classifier unsure of a label), it runs the stages after the one that parked
    it, and their result is appended to the output, review or dead-letter file
    (with Kafka, the running workers pick it up).
    """
    queue = _queue(pipeline, output_path, broker)
    _report(asyncio.run(queue.approve(event_id, note)), as_json)


@review.command("reject")
@click.argument("event_id", metavar="ID")
@pipeline_argument
@output_option
@broker_option
@click.option("--note", required=True, help="What to change; the rework stage gets it as feedback.")
@json_option
def review_reject(
    event_id: str,
    pipeline: str,
    output_path: str | None,
    broker: str | None,
    note: str,
    as_json: bool,
) -> None:
    """Reject event ID: it runs again from the rework stage with --note as feedback.

    The pipeline's review policy names the rework stage and the payload field
    of the note (by default the stage that parked the event, and `feedback`).
    In one process the event runs again at once and its result is appended to
    the output, review or dead-letter file; with Kafka the running workers pick it up.
    """
    queue = _queue(pipeline, output_path, broker)
    _report(asyncio.run(queue.reject(event_id, note)), as_json)
