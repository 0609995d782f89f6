"""The record-limit flags of `run` and `worker`: --max-record-bytes, --max-json-depth."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import click

from streamflow.runtime import Pipeline

__all__ = ["apply_limits", "limits_options"]

_FLAGS = ("max_record_bytes", "max_json_depth")


def limits_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the record-limit flags; the command receives them as ``record_limits: dict``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name, None) for name in _FLAGS}
        kwargs["record_limits"] = {k: v for k, v in given.items() if v is not None}
        return func(*args, **kwargs)

    wrapper = click.option(
        "--max-json-depth",
        type=int,
        default=None,
        metavar="N",
        help="Deepest nesting of objects and arrays an input record may have; deeper ones "
        "are dead letters (default: the pipeline's, 100).",
    )(wrapper)
    wrapper = click.option(
        "--max-record-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="Largest record read or written; a larger one is a dead letter with the reason "
        "(default: the pipeline's, 1 MiB).",
    )(wrapper)
    return wrapper


def apply_limits(pipeline: Pipeline, given: dict[str, int]) -> None:
    """Set the flags given on the command line over the pipeline's own limits.

    Raises:
        ConfigError: a value is out of range (the message names the flag's setting).
    """
    if given:
        pipeline.limits = dataclasses.replace(pipeline.limits, **given)
