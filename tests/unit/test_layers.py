"""The layer rules of the design: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _offenders(
    package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[str]:
    bad = []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if any(rel.startswith(prefix) for prefix in allowed):
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{rel} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("aiokafka", ("streamflow/transports/kafka",)),
        ("orjson", ("streamflow/events/_codec.py",)),
        ("prometheus_client", ("streamflow/metrics/",)),
        ("opentelemetry", ("streamflow/runtime/_otel.py",)),  # optional: one place imports it
        ("redis", ("streamflow/limits/",)),  # optional: the shared limiter backend
    ],
)
def test_third_party_libraries_stay_in_their_layer(library: str, allowed: tuple[str, ...]) -> None:
    assert _offenders("streamflow", (library,), allowed) == []
    assert _offenders("operators", (library,)) == []


def test_ops_import_no_io_layers() -> None:
    forbidden = (
        "streamflow.limits",
        "streamflow.transports",
        "streamflow.runtime",
        "streamflow.metrics",
        "streamflow.cli",
    )
    assert _offenders("streamflow/ops", forbidden) == []


def test_events_import_nothing_above_them() -> None:
    forbidden = ("streamflow.ops", "streamflow.transports", "streamflow.runtime", "streamflow.cli")
    assert _offenders("streamflow/events", forbidden) == []


def test_operators_reach_only_ops_and_events() -> None:
    forbidden = ("streamflow.transports", "streamflow.runtime", "streamflow.cli")
    assert _offenders("operators", forbidden) == []


def test_transports_do_not_import_runtime_or_cli() -> None:
    assert _offenders("streamflow/transports", ("streamflow.runtime", "streamflow.cli")) == []


def test_importing_streamflow_loads_no_kafka_client() -> None:
    # The layer rules above read import statements; this checks what actually loads:
    # only code that asks for the Kafka transport may pay for aiokafka.
    import subprocess
    import sys

    code = (
        "import sys, streamflow, streamflow.transports, streamflow.runtime, operators; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiokafka'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


def test_shared_limiter_backends_sit_between_ops_and_runtime() -> None:
    # Only the runtime picks a backend; the layers below count without knowing of it.
    forbidden = ("streamflow.runtime", "streamflow.cli", "streamflow.transports")
    assert _offenders("streamflow/limits", forbidden) == []
    assert _offenders("streamflow/transports", ("streamflow.limits",)) == []
    assert _offenders("operators", ("streamflow.limits",)) == []


def test_flow_control_sits_below_ops_and_transports() -> None:
    forbidden = (
        "streamflow.ops",
        "streamflow.transports",
        "streamflow.runtime",
        "streamflow.metrics",
        "streamflow.events",
        "reactivex",
    )
    assert _offenders("streamflow/flow", forbidden) == []


def test_transports_take_flow_control_from_the_flow_layer() -> None:
    assert _offenders("streamflow/transports", ("streamflow.ops",)) == []
