"""Classifiers trained once: saved model files, version checks, `streamflow train`, lazy steps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import reactivex

from operators import LinearTextClassifier, classify
from operators.classify import deferred_classifiers
from streamflow.cli import main
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator

ROOT = Path(__file__).resolve().parents[2]

EXAMPLES = [
    *[
        (f"{text} {n}", "billing")
        for n in range(4)
        for text in (
            "I was charged twice for my invoice",
            "refund the duplicate payment on my card",
            "why is my invoice amount higher this month",
        )
    ],
    *[
        (f"{text} {n}", "account_access")
        for n in range(4)
        for text in (
            "I cannot log in, my password is rejected",
            "password reset email never arrives",
            "locked out of my account after too many attempts",
        )
    ],
]


def write_examples(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for text, label in EXAMPLES:
            out.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


async def run(op: Operator, texts: list[str]) -> list[Event]:
    events = [Event(id=f"e{i}", key="k", payload={"text": t}) for i, t in enumerate(texts)]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    out: list[Event] = []
    op(reactivex.from_iterable(events)).subscribe(
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    await done
    return sorted(out, key=lambda e: e.id)


def rewrite_header(path: Path, **changes: object) -> None:
    """Rewrite a model file's header with ``changes`` merged into its libraries."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = json.loads(members["streamflow-model.json"])
    header["libraries"].update(changes)
    members["streamflow-model.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_saved_classifier_loads_and_labels_as_the_trained_one(tmp_path: Path) -> None:
    trained = LinearTextClassifier.from_examples(EXAMPLES)
    path = trained.save(tmp_path / "models" / "tickets.model")
    loaded = LinearTextClassifier.load(path)
    texts = ["my card was charged twice", "the password reset never came"]

    assert loaded.labels == trained.labels == ("account_access", "billing")
    assert loaded.predict(texts) == trained.predict(texts)
    assert [p.label for p in loaded.predict(texts)] == ["billing", "account_access"]
    assert loaded.trained_on == len(EXAMPLES)
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("streamflow-model.json"))
    assert header["kind"] == "linear-text-classifier"
    assert set(header["libraries"]) >= {"scikit-learn", "numpy", "scipy", "joblib", "python"}


def test_model_file_from_another_scikit_learn_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = LinearTextClassifier.from_examples(EXAMPLES).save(tmp_path / "old.model")
    rewrite_header(path, **{"scikit-learn": "0.24.2"})

    with pytest.raises(ConfigError) as caught:
        LinearTextClassifier.load(path)
    message = str(caught.value)
    assert "scikit-learn 0.24.2" in message
    assert "retrain" in message
    assert "scikit-learn==0.24.2" in message
    # The step refuses it when the pipeline is built, before any event.
    with pytest.raises(ConfigError, match="streamflow train"):
        classify(model=path)


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.model"
    bogus.write_text("not a zip")
    with pytest.raises(ConfigError, match="not a streamflow model file"):
        LinearTextClassifier.load(bogus)
    with pytest.raises(ConfigError, match="does not exist"):
        classify(model=tmp_path / "missing.model")


async def test_classify_with_a_model_file_labels_with_it(tmp_path: Path) -> None:
    path = LinearTextClassifier.from_examples(EXAMPLES, name="tickets-v1").save(
        tmp_path / "t.model"
    )
    events = await run(
        classify(model=path, review_below=0.0),
        ["refund my duplicate charge", "locked out of my account"],
    )
    assert [e.payload["classification"]["label"] for e in events] == [
        "billing",
        "account_access",
    ]
    assert {e.payload["classification"]["model"] for e in events} == {"tickets-v1"}


async def test_classify_trains_when_its_stage_starts_not_when_built(tmp_path: Path) -> None:
    op = classify(examples=write_examples(tmp_path / "ex.jsonl"), review_below=0.0)
    [(name, deferred)] = deferred_classifiers(op)
    assert name == "classify"
    assert deferred.will_train
    assert not deferred.started

    events = await run(op, ["charged twice on my invoice"])
    assert deferred.started
    assert events[0].payload["classification"]["label"] == "billing"


def test_building_the_example_pipeline_trains_nothing_and_imports_no_sklearn() -> None:
    # Every process that loads the pipeline file builds it: topics, produce, graph,
    # review and the workers of the other stages must not train or load a model.
    code = textwrap.dedent(
        """
        import sys
        from streamflow.cli._load import load_pipeline
        pipeline = load_pipeline("examples/support_tickets/pipeline.py")
        print(sorted(m for m in ("sklearn", "joblib", "bm25s") if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "SUPPORT_CLASSIFIER_MODEL": "/nonexistent/c.model"},
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_train_command_writes_the_model_the_pipeline_then_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = write_examples(tmp_path / "examples.jsonl")
    model = tmp_path / "out" / "classifier.model"
    pipeline = tmp_path / "pipe.py"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            from operators import classify
            from streamflow import Pipeline, Stage

            pipeline = Pipeline(
                "tickets",
                [
                    Stage("classify", classify(model={str(model)!r}, examples={str(examples)!r})),
                    Stage(
                        "other",
                        classify(model={str(model)!r}, examples={str(examples)!r}, name="second"),
                    ),
                ],
            )
            """
        )
    )

    assert main(["train", str(pipeline), "--stage", "classify"]) == 0
    assert "on 24 examples, 2 labels" in capsys.readouterr().out
    loaded = LinearTextClassifier.load(model)
    assert loaded.labels == ("account_access", "billing")

    other = tmp_path / "other.model"
    assert main(["train", str(pipeline), "--stage", "other", "--out", str(other)]) == 0
    assert other.is_file()


def test_train_command_fails_with_a_one_line_error_without_a_classify_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = tmp_path / "pipe.py"
    pipeline.write_text(
        textwrap.dedent(
            """
            from streamflow import Pipeline, Stage, map_async

            async def keep(event):
                return event

            pipeline = Pipeline("plain", [Stage("keep", map_async(keep))])
            """
        )
    )
    assert main(["train", str(pipeline), "--stage", "keep", "--out", "x.model"]) == 2
    assert "has no classify step that trains on examples" in capsys.readouterr().err


async def test_running_one_stage_starts_only_that_stages_model(tmp_path: Path) -> None:
    from streamflow import Pipeline, Stage

    examples = write_examples(tmp_path / "ex.jsonl")
    pipeline = Pipeline(
        "two",
        [
            Stage("first", classify(examples=examples, review_below=0.0, name="first")),
            Stage("second", classify(examples=examples, review_below=0.0, name="second")),
        ],
    )
    [(_, first)] = deferred_classifiers(pipeline.stage("first").op)
    [(_, second)] = deferred_classifiers(pipeline.stage("second").op)

    events = await run(pipeline.operator(["second"]), ["refund my duplicate charge"])

    assert events[0].payload["classification"]["label"] == "billing"
    assert second.started
    assert not first.started  # a worker of another stage never loads or trains it
