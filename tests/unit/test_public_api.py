"""The public names are a contract: adding or removing one is a deliberate change."""

from __future__ import annotations

import streamflow
import streamflow.errors
import streamflow.testing


def test_top_level_public_names_are_pinned() -> None:
    assert sorted(streamflow.__all__) == [
        "AdaptiveConcurrency",
        "CircuitBreaker",
        "ConfigError",
        "DeadLetter",
        "ErrorInfo",
        "Event",
        "EventError",
        "EventFailed",
        "EventFiltered",
        "EventParked",
        "Flow",
        "FlowClosed",
        "FlowFull",
        "Operator",
        "Pipeline",
        "RateLimiter",
        "RetriableError",
        "RetryPolicy",
        "RunReport",
        "Runtime",
        "Stage",
        "StepRecord",
        "StreamflowError",
        "TopologyError",
        "__version__",
        "batch_async",
        "circuit_breaker",
        "fallback",
        "filter",
        "map_async",
        "open",
        "parallel",
        "pipe",
        "rate_limit",
        "route",
        "run_flow",
        "shared_limiter",
        "tap",
    ]
    for name in streamflow.__all__:
        assert getattr(streamflow, name) is not None


def test_ops_exports_what_pipelines_are_built_from_and_no_engine_internals() -> None:
    import streamflow.ops

    exported = set(streamflow.ops.__all__)
    for internal in ("Slots", "Relay", "gate", "StagePlace", "run_step", "StepLane", "Ticket"):
        assert internal not in exported, f"{internal} is an engine internal"
        assert not hasattr(streamflow.ops, internal)
    assert {"map_async", "batch_async", "route", "parallel", "filter", "tap", "rate_limit"} <= (
        exported
    )
    for name in streamflow.ops.__all__:
        assert getattr(streamflow.ops, name) is not None


def test_each_operator_has_one_name_as_the_readme_spells_it() -> None:
    import streamflow.ops
    from streamflow import filter, route

    assert filter is streamflow.ops.filter and route is streamflow.ops.route
    for alias in ("filter_events", "branch"):
        assert not hasattr(streamflow, alias) and not hasattr(streamflow.ops, alias)
    assert filter(lambda e: True).kind == "filter"


def test_every_error_descends_from_one_root_and_is_drawn_in_the_tree() -> None:
    doc = streamflow.errors.__doc__ or ""
    for name in streamflow.errors.__all__:
        error = getattr(streamflow.errors, name)
        assert issubclass(error, streamflow.errors.StreamflowError)
        assert name in doc, f"{name} is missing from the tree in the errors docstring"


def test_retriable_errors_say_so() -> None:
    from streamflow.errors import RateLimited, StepFailed, StepTimeout, TransportRetriable

    assert RateLimited("x", retry_after=2).retriable
    assert StepTimeout("x").retriable
    assert TransportRetriable("x").retriable
    assert not StepFailed("x").retriable


def test_testing_helpers_are_public() -> None:
    assert {"open_openai_server", "run_marbles", "events_from_marbles"} <= set(
        streamflow.testing.__all__
    )


def test_the_readme_lists_every_install_extra() -> None:
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    rows = set(re.findall(r"^\| `([a-z]+)` \|", (root / "README.md").read_text(), re.M))
    assert set(extras) <= rows, f"extras missing from the README table: {set(extras) - rows}"
