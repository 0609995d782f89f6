"""`streamflow trace ID --input OUT.jsonl`: one event's steps as a timeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamflow.cli import cli
from streamflow.cli._console import plain, printable
from streamflow.errors import ConfigError, EventError
from streamflow.events import DeadLetter, ErrorInfo, Event, StepRecord, decode_event, dumps, loads
from streamflow.transports import side_paths

__all__ = ["Found", "find_event", "trace"]


@dataclass(frozen=True)
class Found:
    """Where an event was found and what it looked like there.

    Attributes:
        file: the file it was in.
        kind: ``output``, ``review`` or ``dead letter``.
        event: the event (None for a dead letter of a record that never decoded).
        error: the error, for a dead letter.
    """

    file: Path
    kind: str
    event: Event | None
    error: ErrorInfo | None = None


def _candidates(path: Path) -> list[tuple[Path, str]]:
    dlq, review = side_paths(path)
    return [(path, "output"), (review, "review"), (dlq, "dead letter")]


def find_event(event_id: str, path: str | Path) -> list[Found]:
    """Find every copy of event ``event_id`` in an output file and the files beside it.

    Args:
        event_id: the event id.
        path: the output file of a run; its review and dead-letter files are searched too.

    Returns:
        Every copy found, in file order (output, review, dead letters).
    """
    # The id as it appears inside a JSON string (escapes included).
    needle = dumps(event_id)[1:-1]
    found: list[Found] = []
    for file, kind in _candidates(Path(path)):
        if not file.is_file():
            continue
        with file.open("rb") as handle:
            for line in handle:
                # Decoding every line of a large file is slow; the id must appear verbatim.
                if needle not in line:
                    continue
                hit = _match(line.strip(), event_id, file, kind)
                if hit is not None:
                    found.append(hit)
    return found


def _match(line: bytes, event_id: str, file: Path, kind: str) -> Found | None:
    if kind != "dead letter":
        try:
            event = decode_event(line)
        except (EventError, ValueError):
            # Not an event: the file given may be a dead-letter file (``--dlq`` names it freely).
            return _match(line, event_id, file, "dead letter")
        return Found(file, kind, event, event.error) if event.id == event_id else None
    try:
        letter = DeadLetter.model_validate(loads(line))
    except (EventError, ValueError):
        return None
    if event_id not in {letter.id, letter.event.id if letter.event else None}:
        return None
    return Found(file, kind, letter.event, letter.error)


def _latest(found: list[Found]) -> Found:
    """The copy that went furthest: the longest trace (later files win ties)."""
    return max(
        enumerate(found),
        key=lambda pair: (len(pair[1].event.trace) if pair[1].event else -1, pair[0]),
    )[1]


def _ms(seconds: float) -> str:
    millis = seconds * 1000
    return f"{millis:,.1f}" if millis < 1000 else f"{millis:,.0f}"


def _tokens(tokens_in: float, tokens_out: float) -> str:
    return f"{tokens_in:,.0f}/{tokens_out:,.0f}" if tokens_in or tokens_out else ""


def _cost(record: StepRecord) -> str:
    if record.cost_usd is None:
        return "unknown" if record.model is not None else ""
    return f"{record.cost_usd:.6f}" if record.cost_usd else ""


def _timeline(event: Event, found: Found) -> Table:
    trace = event.trace
    start = min((r.started_at for r in trace), default=0.0)
    table = Table(
        title=plain(
            f"event {printable(event.id)}  key {printable(event.key or '-')}  "
            f"outcome {event.outcome}  ({found.kind}: {printable(found.file.name)})"
        ),
        title_justify="left",
    )
    table.add_column("step", no_wrap=True)
    table.add_column("+ms", justify="right", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("try", justify="right")
    table.add_column("outcome", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("tokens in/out", justify="right")
    table.add_column("cost $", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for index, record in enumerate(trace):
        table.add_row(
            plain(record.step),
            _ms(record.started_at - start),
            _ms(record.duration_s),
            str(record.attempt),
            plain(record.outcome),
            plain(record.model),
            _tokens(record.tokens_in, record.tokens_out),
            _cost(record),
            # A model attempt that failed (429, 5xx, an invalid answer) is a record of
            # its own, with what it was billed: the note says which call and why.
            escape(record.detail or ""),
            style="red" if record.outcome in ("failed", "error") else None,
            end_section=index == len(trace) - 1,
        )
    totals = _totals(trace)
    table.add_row(
        "[bold]total",
        _ms(totals["span_s"]),
        _ms(totals["duration_s"]),
        f"{totals['attempts']:.0f}",
        f"{len(trace)} steps",
        "",
        _tokens(totals["tokens_in"], totals["tokens_out"]) or "0/0",
        f"{totals['cost_usd']:.6f}" + (" + unknown" if totals["unpriced"] else ""),
        "",
    )
    return table


def _totals(trace: list[StepRecord]) -> dict[str, float]:
    if not trace:
        return {
            "span_s": 0.0,
            "duration_s": 0.0,
            "attempts": 0,
            "tokens_in": 0,
            "tokens_out": 0,
            "cost_usd": 0.0,
            "unpriced": 0,
        }
    start = min(r.started_at for r in trace)
    end = max(r.started_at + r.duration_s for r in trace)
    return {
        "span_s": end - start,
        "duration_s": sum(r.duration_s for r in trace),
        "attempts": sum(r.attempt for r in trace),
        "tokens_in": sum(r.tokens_in for r in trace),
        "tokens_out": sum(r.tokens_out for r in trace),
        "cost_usd": sum(r.cost_usd for r in trace if r.cost_usd is not None),
        "unpriced": sum(1 for r in trace if r.cost_usd is None and r.model is not None),
    }


@cli.command()
@click.argument("event_id", metavar="ID")
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    help="Output file of a run; its review and dead-letter files are searched too.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw trace as JSON.")
def trace(event_id: str, input_path: str, as_json: bool) -> None:
    """Print the trace of event ID as a timeline: per step, when, how long, model, tokens, cost."""
    if not Path(input_path).is_file():
        raise ConfigError(f"file {input_path!r} does not exist; pass the run's --output file")
    found = find_event(event_id, input_path)
    if not found:
        raise ConfigError(
            f"no event {event_id!r} in {input_path} or the review and dead-letter files beside it"
        )
    chosen = _latest(found)
    event = chosen.event
    if as_json:
        click.echo(dumps(event.trace if event is not None else []).decode())
        return
    console = Console()
    if not console.is_terminal:
        # Piped or captured output has no width of its own; do not squeeze the columns.
        console = Console(width=160)
    # Ids, reasons and errors come from input records: printed as text, never as markup.
    if event is None:
        console.print(plain(f"event {event_id} never decoded ({chosen.kind}: {chosen.file.name})"))
    else:
        console.print(_timeline(event, chosen))
        for record in event.trace:
            if record.step == "review" and record.detail:
                console.print(plain(f"{record.outcome} by a reviewer: {record.detail}"))
        if event.reason and event.outcome != "ok":
            console.print(plain(f"reason: {event.reason}"))
    error = chosen.error if chosen.kind == "dead letter" else event.error if event else None
    if error is not None:
        where = f" in {error.step}" if error.step else ""
        console.print(plain(f"error{where}: {error.type}: {error.message}", style="red"))
    others = sorted({f.kind for f in found if f is not chosen})
    if others:
        console.print(f"also in: {', '.join(others)} (earlier copies)")
