"""The documentation's code examples run and do what the pages say they do.

Every file under docs/examples/ is included into a page (pymdownx.snippets), so
each one has a check here; a new example without a check fails the suite. The
``streamflow ...`` command lines of the pages' shell blocks are checked against
the command line itself: every command and flag they use exists.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from streamflow.cli import cli, main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
# Input data of the examples, not examples themselves.
DATA_SUFFIXES = {".jsonl"}


def _example(name: str) -> Any:
    return importlib.import_module(f"docs.examples.{name}")


async def check_typed_steps() -> None:
    example = _example("typed_steps")
    answers = await example.main()
    assert [(a.id, a.reply) for a in answers] == [
        ("t1", "about billing"),
        ("t2", "about other"),
        ("t3", "about billing"),
    ]
    assert all(isinstance(a, example.Answer) for a in answers)


async def check_event_steps() -> None:
    example = _example("event_steps")
    example.model.calls.clear()
    sink = await example.main()
    by_id = {event.id: event for event in sink.events}
    assert sink.outcomes() == {"ok": 1, "review": 1, "filtered": 1}
    assert by_id["t1"].payload["label"] == "urgent"
    # The first call failed with a RuntimeError that retry_on names: the second one counted.
    assert [record.attempt for record in by_id["t1"].trace] == [2]
    assert by_id["t3"].reason == "the reviewer should read this one"
    assert by_id["t2"].trace[0].step == "filter"
    assert example.model.calls == {"t1": 2, "t3": 2}


async def check_composing() -> None:
    sink = await _example("composing").main()
    by_id = {event.id: event for event in sink.events}
    assert by_id["a"].payload["reply"] == "invoice 42 goes to the billing team"
    assert by_id["a"].payload["words"] == 4
    assert by_id["b"].payload["reply"] == "thanks, we are on it"
    assert [record.step for record in by_id["b"].trace] == [
        "count_words",
        "find_invoice",
        "general_reply",
    ]


async def check_embedding() -> None:
    seen = await _example("embedding").main()
    assert seen == {
        "q0": "you asked 3 words",
        "q1": "you asked 3 words",
        "q2": "failed: an empty question has no answer",
        "q3": "you asked 3 words",
        "q9": "dead letter from answer after 1 attempt(s)",
    }


def check_web_service() -> None:
    from fastapi.testclient import TestClient

    app = _example("web_service").app
    # TestClient runs the app's lifespan (and so streamflow.open) on a loop of its own.
    with TestClient(app) as client:
        answered = client.post("/tickets", json={"id": "t1", "customer": "ada", "text": "hi"})
        assert answered.status_code == 200
        assert answered.json() == {"id": "t1", "reply": "Hi ada, we read: hi"}
        assert client.post("/tickets", json={"id": "t2"}).status_code == 422


async def check_models_and_cost() -> None:
    events = await _example("models_and_cost").main()
    assert {event.id for event in events} == {"t1", "t2"}
    for event in events:
        assert event.outcome == "ok", event.error
        assert event.payload["classification"]["label"] in {"billing", "shipping", "account_access"}
        record = event.trace[-1]
        assert record.model == "gpt-4o-mini"
        assert record.tokens_in > 0 and record.tokens_out > 0
        # The example's own prices: 0.15 and 0.60 USD per million tokens in and out.
        expected = (record.tokens_in * 0.15 + record.tokens_out * 0.60) / 1e6
        assert record.cost_usd == pytest.approx(expected)


async def check_offline_defaults() -> None:
    events = {event.id: event for event in await _example("offline_defaults").main()}
    assert {key: event.outcome for key, event in events.items()} == {"T1": "ok", "T2": "ok"}
    answers = {}
    for key, event in events.items():
        assert [r.step for r in event.trace] == ["classify", "retrieve", "generate", "check"]
        assert [r.model for r in event.trace][1:] == ["bm25", "extractive", "lexical-grounding"]
        answers[key] = event.payload
    assert answers["T1"]["classification"]["label"] == "billing"
    assert answers["T2"]["classification"]["label"] == "account_access"
    assert answers["T1"]["passages"][0]["id"] == "kb-refund"
    assert answers["T2"]["passages"][0]["id"] == "kb-password"
    assert "charged twice" in answers["T1"]["answer"]["text"]


def check_trained_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from operators import LinearTextClassifier

    monkeypatch.setenv("TICKETS_MODEL", str(tmp_path / "code.model"))
    example = importlib.reload(_example("trained_classifier"))
    assert asyncio.run(example.main()) == ["billing", "shipping"]
    assert (tmp_path / "code.model").is_file()
    # The command line the page shows writes a model file that loads.
    out = tmp_path / "cli.model"
    path = EXAMPLES / "trained_classifier.py"
    assert main(["train", str(path), "--stage", "classify", "--out", str(out)]) == 0
    assert set(LinearTextClassifier.load(out).labels) == {"billing", "shipping", "account_access"}


def check_review_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # review.sh runs from the checkout's root; here from a folder that links docs/ to it.
    (tmp_path / "docs").symlink_to(DOCS)
    monkeypatch.chdir(tmp_path)
    commands = [cmd for cmd in _shell_commands((EXAMPLES / "review.sh").read_text())]
    assert len(commands) == 5
    for argv in commands:
        assert main(argv[1:]) == 0, argv
    printed = capsys.readouterr().out
    assert "T2" in printed and "T3" in printed and "refunds need a person" in printed
    lines = (tmp_path / "out" / "review.jsonl").read_text().splitlines()
    import json

    replies = {record["id"]: record["payload"]["reply"] for record in map(json.loads, lines)}
    assert replies == {
        "T1": "Thanks, we are on it. -- Support",
        "T2": "A refund is on its way. -- Support",
        "T3": "Sorry for the trouble: we will call you about the double charge. -- Support",
    }


def check_observability() -> None:
    exposition, events, span_names = asyncio.run(_example("observability").main())
    assert 'streamflow_events_total{outcome="ok",pipeline="observed",stage="lookup"} 3.0' in (
        exposition
    )
    assert "streamflow_stage_duration_seconds_bucket" in exposition
    assert [record.step for event in events for record in event.trace] == ["lookup"] * 3
    assert sorted(span_names) == ["lookup"] * 3 + ["observed event"] * 3


def check_kafka_pipeline() -> None:
    example = _example("kafka_pipeline")
    assert example.pipeline.topics() == [
        "orders.in",
        "orders.enrich",
        "orders.out",
        "orders.dlq",
        "orders.review",
    ]
    assert [example.pipeline.group(stage.name) for stage in example.pipeline.stages] == [
        "orders.enrich",
        "orders.reply",
    ]
    assert (example.crm.input_topic, example.crm.output_topic) == ("crm.orders", "crm.replies")
    # The reply stage's worker decodes what enrich wrote to its model.
    assert example.pipeline.stage("reply").payload_model is example.Enriched
    settings = example.confluent_cloud_settings("KEY", "SECRET")
    assert settings.security_protocol == "SASL_SSL" and settings.uses_tls
    assert "SECRET" not in repr(settings)


CHECKS: dict[str, Callable[..., Any]] = {
    "typed_steps": check_typed_steps,
    "event_steps": check_event_steps,
    "composing": check_composing,
    "embedding": check_embedding,
    "web_service": check_web_service,
    "models_and_cost": check_models_and_cost,
    "offline_defaults": check_offline_defaults,
    "trained_classifier": check_trained_classifier,
    "review_pipeline": check_review_pipeline,
    "observability": check_observability,
    "kafka_pipeline": check_kafka_pipeline,
}
# Files a check above runs as well: review.sh is the walkthrough of review_pipeline.
COVERED_BY = {"review.sh": "review_pipeline"}


def test_every_docs_example_has_a_check() -> None:
    files = [
        path
        for path in EXAMPLES.iterdir()
        if path.is_file() and path.name != "__init__.py" and path.suffix not in DATA_SUFFIXES
    ]
    names = {COVERED_BY.get(path.name, path.stem) for path in files}
    assert names == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_docs_example_runs_as_documented(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    check = CHECKS[name]
    given = {"tmp_path": tmp_path, "monkeypatch": monkeypatch, "capsys": capsys}
    wanted = {arg: given[arg] for arg in inspect.signature(check).parameters}
    if inspect.iscoroutinefunction(check):
        asyncio.run(check(**wanted))
    else:
        check(**wanted)


def test_every_snippet_a_page_includes_is_a_file() -> None:
    included = []
    for page in DOCS.rglob("*.md"):
        for line in page.read_text().splitlines():
            if line.strip().startswith('--8<-- "'):
                included.append(line.strip().removeprefix('--8<-- "').rstrip('"'))
    assert len(included) >= len(CHECKS)
    for path in included:
        assert (ROOT / path).is_file(), path
    assert {Path(path).name for path in included} >= {f"{name}.py" for name in CHECKS}


def _shell_commands(text: str) -> Iterator[list[str]]:
    """The ``streamflow ...`` commands of a shell text, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(("streamflow ", ".venv/bin/streamflow ")):
            yield shlex.split(line.removeprefix(".venv/bin/"))


def _page_commands() -> Iterator[tuple[str, list[str]]]:
    fence = re.compile(r"```sh\n(.*?)```", re.S)
    for page in sorted(DOCS.glob("*.md")):
        for block in fence.findall(page.read_text()):
            for argv in _shell_commands(block):
                yield page.name, argv


def test_every_command_line_on_the_pages_uses_real_commands_and_flags() -> None:
    checked = 0
    for page, argv in _page_commands():
        command: click.Command = cli
        words = argv[1:]
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        assert not isinstance(command, click.Group), f"{page}: {shlex.join(argv)}"
        flags = {flag for param in command.params for flag in getattr(param, "opts", [])}
        flags |= {flag for param in command.params for flag in getattr(param, "secondary_opts", [])}
        for word in words:
            if word.startswith("-") and word != "-":
                assert word.split("=", 1)[0] in flags, f"{page}: {shlex.join(argv)}: {word}"
        checked += 1
    assert checked >= 15


def test_make_docs_builds_strict_and_shows_its_warnings() -> None:
    # `--quiet` hides warnings from the count that --strict fails on: the build must not use it.
    target = (ROOT / "Makefile").read_text().split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in target
    assert "--quiet" not in target and " -q" not in target


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    # The same build as `make docs`, so a renamed name or a broken docstring fails here too.
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        stdin=subprocess.DEVNULL,
    )
    warnings = [line for line in built.stderr.splitlines() if "WARNING" in line]
    assert built.returncode == 0 and not warnings, "\n".join(warnings) or built.stderr[-2000:]
    reference = tmp_path / "site" / "reference"
    assert (reference / "streamflow" / "index.html").is_file()
    # Sphinx roles in the docstrings read as code, not as ":class:`...`" (docs/sphinx_roles.py).
    roles = re.compile(r":(class|func|meth|data|mod|attr|exc):")
    shown = [
        page.parent.name for page in reference.rglob("*.html") if roles.search(page.read_text())
    ]
    assert shown == []
