"""The `streamflow` command line: thin — parse, build settings, call the runtime."""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import get_args

import click

from streamflow.cli._load import load_pipeline
from streamflow.errors import StreamflowError
from streamflow.runtime import Engine

__all__ = ["cli", "main"]


@click.group(
    help="Run AI pipelines as streams: in one process, or with Kafka between stages.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="streamflow-ai", prog_name="streamflow")
def cli() -> None:
    """The command group."""


pipeline_argument = click.argument("pipeline", metavar="PIPELINE")


@cli.command()
@pipeline_argument
@click.option("--input", "-i", "input_path", required=True, help="JSONL file, or - for stdin.")
@click.option("--output", "-o", "output_path", required=True, help="JSONL file, or - for stdout.")
@click.option("--dlq", default=None, help="Dead-letter file (default: beside the output).")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics and /healthz here.")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@click.option("--window", type=click.IntRange(min=1), default=None, help="Most events in flight.")
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to finish in-flight work on stop.",
)
@click.option(
    "--broker",
    default=None,
    metavar="HOST:PORT",
    help="Run the stages as Kafka workers with topics between them.",
)
@click.option(
    "--engine",
    type=click.Choice(get_args(Engine)),
    default="auto",
    show_default=True,
    help="In one process: lanes run each event as one coroutine, stream runs the composed "
    "reactivex operators, auto takes lanes when every stage can.",
)
def run(
    pipeline: str,
    input_path: str,
    output_path: str,
    dlq: str | None,
    metrics_port: int | None,
    no_progress: bool,
    window: int | None,
    drain_timeout: float,
    broker: str | None,
    engine: Engine,
) -> None:
    """Run every stage of PIPELINE in this process, from --input to --output.

    PIPELINE is a .py file that defines `pipeline`, or module:attribute.
    """
    from streamflow.cli._run import run_in_process

    loaded = load_pipeline(pipeline)
    runner = functools.partial(run_in_process, engine=engine)
    if broker is not None:
        if engine != "auto":
            raise click.UsageError("--engine is for runs in one process; drop it or --broker")
        from streamflow.cli._kafka import run_through_topics

        runner = functools.partial(run_through_topics, broker=broker)
    report = asyncio.run(
        runner(
            loaded,
            input_path=input_path,
            output_path=output_path,
            dlq_path=dlq,
            metrics_port=metrics_port,
            progress=not no_progress,
            window=window,
            drain_timeout=drain_timeout,
        )
    )
    if report.error is not None:
        raise StreamflowError(f"run stopped: {type(report.error).__name__}: {report.error}")


@cli.command()
@pipeline_argument
def graph(pipeline: str) -> None:
    """Print PIPELINE as a Mermaid diagram."""
    click.echo(load_pipeline(pipeline).mermaid(), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit code (2 for bad input or config).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on a usage or configuration error, 1 on a failed run.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="streamflow", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except StreamflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


from streamflow.cli import _review, _trace  # noqa: E402,F401,I001  (review and trace commands)
from streamflow.cli import _kafka  # noqa: E402,F401  (registers the Kafka commands)
from streamflow.cli import _train  # noqa: E402,F401  (the train command)

if __name__ == "__main__":
    raise SystemExit(main())
