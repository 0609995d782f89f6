"""The documentation's code examples run and do what the pages say they do.

Every file under docs/examples/ is included into a page (pymdownx.snippets), so
each one has a check here; a new example without a check fails the suite.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


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


async def check_web_service() -> None:
    from fastapi.testclient import TestClient

    app = _example("web_service").app
    # TestClient runs the app's lifespan (and so streamflow.open) in a thread of its own.
    with TestClient(app) as client:
        answered = client.post("/tickets", json={"id": "t1", "customer": "ada", "text": "hi"})
        assert answered.status_code == 200
        assert answered.json() == {"id": "t1", "reply": "Hi ada, we read: hi"}
        assert client.post("/tickets", json={"id": "t2"}).status_code == 422


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "typed_steps": check_typed_steps,
    "event_steps": check_event_steps,
    "composing": check_composing,
    "embedding": check_embedding,
    "web_service": check_web_service,
}


def test_every_docs_example_has_a_check() -> None:
    examples = {path.stem for path in EXAMPLES.glob("*.py") if path.stem != "__init__"}
    assert examples == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_docs_example_runs_as_documented(name: str) -> None:
    await CHECKS[name]()


def test_every_snippet_a_page_includes_is_a_file() -> None:
    included = []
    for page in (ROOT / "docs").rglob("*.md"):
        for line in page.read_text().splitlines():
            if line.strip().startswith('--8<-- "'):
                included.append(line.strip().removeprefix('--8<-- "').rstrip('"'))
    assert included, "no page includes an example"
    for path in included:
        assert (ROOT / path.split(":")[0]).is_file(), path
