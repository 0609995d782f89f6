"""Progress bar and summary table for runs (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from streamflow.runtime import RunReport

__all__ = ["plain", "print_summary", "printable", "progress_bar", "stderr"]

stderr = Console(stderr=True)

_OUTCOMES = ("ok", "review", "dead_lettered", "filtered", "interrupted")


def printable(value: object) -> str:
    """Return ``value`` as one line a terminal shows as it is: control characters escaped.

    Ids, keys, labels and reasons come from input records; an escape sequence
    in one must not reach the terminal, and a newline must not break the line.

    Args:
        value: any value (None gives an empty string).

    Returns:
        The text, with every non-printable character written as a Python escape.
    """
    if value is None:
        return ""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def plain(value: object, *, style: str = "") -> Text:
    """Return ``value`` as rich text that is never read as markup (see :func:`printable`)."""
    return Text(printable(value), style=style)


@contextmanager
def progress_bar(total: int | None, enabled: bool) -> Iterator[Callable[[RunReport], None]]:
    """Yield a callback that draws the run's progress (a no-op when disabled)."""
    if not enabled:
        yield lambda report: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>7.0f} ev/s  in flight {task.fields[inflight]:>4}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task("events", total=total, rate=0.0, inflight=0)

        def update(report: RunReport) -> None:
            progress.update(
                task,
                completed=report.done,
                rate=report.events_per_second,
                inflight=report.read - report.done,
            )

        yield update


def print_summary(report: RunReport, console: Console = stderr) -> None:
    """Print outcomes, outcomes per group, stage latencies and throughput."""
    seen = [o for o in _OUTCOMES if report.outcomes.get(o)]
    table = Table(
        title=f"{report.pipeline}: {report.read} read, {report.done} accounted for",
        title_justify="left",
    )
    table.add_column(report.summary_field or "all")
    for outcome in seen:
        table.add_column(outcome, justify="right")
    table.add_column("total", justify="right")
    costly = any(report.group_cost.values()) or any(report.stage_cost.values())
    if costly:
        table.add_column("cost $", justify="right")
    for group in sorted(report.groups):
        counts = report.groups[group]
        cost = [f"{report.group_cost.get(group, 0.0):.4f}"] if costly else []
        table.add_row(
            plain(group), *(str(counts.get(o, 0)) for o in seen), str(sum(counts.values())), *cost
        )
    total_cost = [f"[bold]{sum(report.stage_cost.values()):.4f}"] if costly else []
    table.add_row(
        "[bold]all",
        *(f"[bold]{report.outcomes.get(o, 0)}" for o in seen),
        f"[bold]{report.done}",
        *total_cost,
    )
    console.print(table)
    if report.unpriced:
        console.print(
            f"cost unknown for {escape(', '.join(sorted(report.unpriced)))} (no price; "
            "the cost columns count priced models only): set STREAMFLOW_MODEL_PRICES"
        )

    stages = Table(title="latency per stage", title_justify="left")
    for column in ("stage", "events", "p50 ms", "p99 ms", *(["cost $"] if costly else [])):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for name, sketch in report.stages.items():
        stages.add_row(
            plain(name),
            str(sketch.count),
            f"{sketch.quantile(0.5) * 1000:.1f}",
            f"{sketch.quantile(0.99) * 1000:.1f}",
            *([f"{report.stage_cost.get(name, 0.0):.4f}"] if costly else []),
        )
    e2e = report.end_to_end
    stages.add_row(
        "[bold]end to end",
        str(e2e.count),
        f"{e2e.quantile(0.5) * 1000:.1f}",
        f"{e2e.quantile(0.99) * 1000:.1f}",
    )
    console.print(stages)
    console.print(
        f"[bold]{report.events_per_second:,.0f} events/s[/] over {report.elapsed:.2f}s, "
        f"peak in flight {report.peak_in_flight} (window {report.window})"
        + ("  [yellow]stopped early[/]" if report.stopped_early else "")
    )
