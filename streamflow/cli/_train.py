"""`streamflow train PIPELINE --stage STAGE --out FILE`: train a classifier once, save it."""

from __future__ import annotations

import time
from pathlib import Path

import click

from streamflow.cli import cli
from streamflow.cli._load import load_pipeline
from streamflow.errors import ConfigError

__all__ = ["train"]


@cli.command()
@click.argument("pipeline", metavar="PIPELINE")
@click.option("--stage", required=True, help="The stage whose classifier is trained.")
@click.option("--step", default=None, help="The classify step, when the stage has more than one.")
@click.option(
    "--out",
    "-o",
    "out",
    default=None,
    help="Model file to write (default: the path the step's model= names).",
)
def train(pipeline: str, stage: str, step: str | None, out: str | None) -> None:
    """Train the classify step of a STAGE of PIPELINE on its examples and save the model.

    The step then loads the file instead of training in every process: pass the
    file to it as classify(model=FILE, examples=...). The file records the
    library versions; loading it under another scikit-learn version fails with
    a message to train again.
    """
    from operators.classify import deferred_classifiers

    loaded = load_pipeline(pipeline)
    found = deferred_classifiers(loaded.stage(stage).op)
    if step is not None:
        found = [(name, model) for name, model in found if name == step]
    if not found:
        raise ConfigError(
            f"stage '{stage}' has no classify step that trains on examples"
            + (f" named '{step}'" if step else "")
            + "; give classify(examples=...) there"
        )
    if len(found) > 1:
        raise ConfigError(
            f"stage '{stage}' has {len(found)} classify steps; pick one with --step "
            + " or ".join(name for name, _ in found)
        )
    name, deferred = found[0]
    target = Path(out) if out is not None else deferred.model_path
    if target is None:
        raise ConfigError(
            f"step '{name}' names no model file; pass --out FILE (and give it to the step "
            "as classify(model=FILE, examples=...))"
        )
    started = time.perf_counter()
    model = deferred.train()
    seconds = time.perf_counter() - started
    model.save(target)
    click.echo(
        f"trained {model.name} for step '{name}' of stage '{stage}' on "
        f"{model.trained_on} examples, {len(model.labels)} labels, in {seconds:.1f} s "
        f"-> {target}"
    )
