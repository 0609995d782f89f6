"""The `streamflow` command line: thin — parse, build settings, call the runtime.

Exit status: 0 done, 1 the run failed (a fatal error while running, a broker
lost, an unwritable disk), 2 usage or configuration (bad arguments, a pipeline
file that does not load, a result file that exists or cannot be written).
"""

from __future__ import annotations

import asyncio
import functools
import sys

import click

from streamflow.cli._console import printable
from streamflow.cli._limits import apply_limits, limits_options
from streamflow.cli._load import load_pipeline
from streamflow.errors import ConfigError, StreamflowError
from streamflow.metrics import DEFAULT_HOST

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "cli", "main", "metrics_host_option"]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILED = 1
"""The run started and failed (see the error line)."""
EXIT_CONFIG = 2
"""Bad arguments or configuration; nothing was run."""

_EPILOG = (
    "Exit status: 0 done, 1 the run failed, 2 usage or configuration error "
    "(nothing was read or written)."
)

metrics_host_option = click.option(
    "--metrics-host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Interface for /metrics and /healthz (0.0.0.0: every interface, e.g. in a container).",
)


@click.group(
    help="Run AI pipelines as streams: in one process, or with Kafka between stages.",
    epilog=_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="streamflow-ai", prog_name="streamflow")
def cli() -> None:
    """The command group."""


pipeline_argument = click.argument("pipeline", metavar="PIPELINE")


@cli.command(epilog=_EPILOG)
@pipeline_argument
@click.option("--input", "-i", "input_path", required=True, help="JSONL file, or - for stdin.")
@click.option("--output", "-o", "output_path", required=True, help="JSONL file, or - for stdout.")
@click.option(
    "--dlq",
    default=None,
    help="Dead-letter file (default: beside the output; required with --output -).",
)
@click.option(
    "--filtered",
    "filtered_path",
    default=None,
    metavar="FILE",
    help="Write events a filter took out here (default: they are only counted).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace result files that exist (default: refuse)."
)
@click.option("--append", is_flag=True, help="Add to result files that exist (default: refuse).")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics and /healthz here.")
@metrics_host_option
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@click.option("--window", type=click.IntRange(min=1), default=None, help="Most events in flight.")
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="After SIGTERM/SIGINT, seconds in-flight events get to finish before they are "
    "dead-lettered as Interrupted. The end of the input is not a stop: every event read "
    "then finishes, however long it takes.",
)
@click.option(
    "--broker",
    default=None,
    metavar="HOST:PORT",
    help="Run the stages as Kafka workers with topics between them.",
)
@limits_options
def run(
    pipeline: str,
    input_path: str,
    output_path: str,
    dlq: str | None,
    filtered_path: str | None,
    overwrite: bool,
    append: bool,
    metrics_port: int | None,
    metrics_host: str,
    no_progress: bool,
    window: int | None,
    drain_timeout: float,
    broker: str | None,
    record_limits: dict[str, int],
) -> None:
    """Run every stage of PIPELINE in this process, from --input to --output.

    PIPELINE is a .py file that defines `pipeline`, or module:attribute.
    Answers go to --output, dead letters and events parked for review to files
    beside it. A result file that exists is refused unless --overwrite or
    --append says what to do with it; results are written aside and moved into
    place at the end, so a run never leaves half a file where the old one was.
    """
    from streamflow.cli._run import run_in_process
    from streamflow.transports import WriteMode, plan_outputs

    if overwrite and append:
        raise click.UsageError("give --overwrite or --append, not both")
    loaded = load_pipeline(pipeline)
    apply_limits(loaded, record_limits)
    mode: WriteMode = "append" if append else "overwrite" if overwrite else "create"
    if broker is not None and filtered_path is not None:
        raise click.UsageError("--filtered is for runs in one process; drop it or --broker")
    paths = plan_outputs(
        output_path, dlq=dlq, inputs=[input_path], mode=mode, filtered=filtered_path
    )
    runner = functools.partial(run_in_process, append=append)
    if filtered_path is not None:
        runner = functools.partial(runner, filtered_path=filtered_path)
    if broker is not None:
        from streamflow.cli._kafka import run_through_topics

        runner = functools.partial(run_through_topics, broker=broker, append=append)
    report = asyncio.run(
        runner(
            loaded,
            input_path=input_path,
            output_path=output_path,
            dlq_path=str(paths.dlq),
            review_path=str(paths.review),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
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


def _error(message: str, status: int) -> int:
    # One line, whatever the message quotes from input (ids, paths): control
    # characters and newlines are escaped.
    print(f"error: {printable(message)}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit status.

    Every error is one line on stderr starting with ``error:``.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 done, 1 the run failed, 2 a usage or configuration error (130 on Ctrl-C
        before the run started).
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="streamflow", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.exceptions.Abort:
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        return _error(exc.format_message(), EXIT_CONFIG)
    except ConfigError as exc:
        return _error(str(exc), EXIT_CONFIG)
    except StreamflowError as exc:
        return _error(str(exc), EXIT_FAILED)
    except OSError as exc:
        # A disk that fills up or a file that vanishes mid-run: the run failed.
        return _error(str(exc), EXIT_FAILED)
    return EXIT_OK


from streamflow.cli import _review, _trace  # noqa: E402,F401,I001  (review and trace commands)
from streamflow.cli import _kafka  # noqa: E402,F401  (registers the Kafka commands)
from streamflow.cli import _train  # noqa: E402,F401  (the train command)

if __name__ == "__main__":
    raise SystemExit(main())
