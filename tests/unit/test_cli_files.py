"""`streamflow run` never destroys a file, fails early on bad paths, and exits 0, 1 or 2."""

from __future__ import annotations

import io
import os
import sys
import textwrap
from pathlib import Path

import pytest

from streamflow.cli import main
from streamflow.events import loads

PIPELINE = textwrap.dedent(
    """
    from streamflow import Pipeline, Stage, map_async

    async def upper(event):
        if event.payload["text"] == "bad":
            raise ValueError("cannot shout that")
        return event.with_payload({**event.payload, "text": event.payload["text"].upper()})

    pipeline = Pipeline("shout", [Stage("upper", map_async(upper, name="upper"))])
    """
)

# A stage that is a plain reactivex operator raising: the whole run stops.
FATAL = textwrap.dedent(
    """
    from reactivex import operators as rx
    from streamflow import Pipeline, Stage

    def boom(event):
        raise RuntimeError("the stage broke")

    pipeline = Pipeline("fatal", [Stage("boom", rx.map(boom))])
    """
)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shout.py").write_text(PIPELINE)
    (tmp_path / "in.jsonl").write_text('{"id":"a","text":"hi"}\n{"id":"b","text":"bad"}\n')
    return tmp_path


def _run(*args: str) -> int:
    return main(["run", "shout.py", "-i", "in.jsonl", "--no-progress", *args])


def _ids(path: Path) -> list[str]:
    return [loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:")
    return err


def test_output_that_is_the_input_by_another_name_is_refused(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (work / "in.jsonl").read_bytes()
    os.link(work / "in.jsonl", work / "linked.jsonl")
    for output in ("./in.jsonl", str(work / "in.jsonl"), "linked.jsonl", "sub/../in.jsonl"):
        (work / "sub").mkdir(exist_ok=True)
        assert _run("-o", output, "--overwrite") == 2, output
        assert "is the input file" in _one_error_line(capsys)
    assert _run("-o", "out.jsonl", "--dlq", "./in.jsonl") == 2
    assert "--dlq" in _one_error_line(capsys)
    assert (work / "in.jsonl").read_bytes() == before
    assert not (work / "out.jsonl").exists()


def test_existing_results_are_refused_unless_overwrite_or_append(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("-o", "out.jsonl") == 0
    assert _ids(work / "out.jsonl") == ["a"] and _ids(work / "out.dlq.jsonl") == ["b"]
    capsys.readouterr()

    assert _run("-o", "out.jsonl") == 2
    err = _one_error_line(capsys)
    assert "exists" in err and "--overwrite" in err and "--append" in err
    assert _ids(work / "out.jsonl") == ["a"]

    # Only the dead letters are left from an earlier run: still refused, still kept.
    (work / "out.jsonl").unlink()
    assert _run("-o", "out.jsonl") == 2
    assert "--dlq" in _one_error_line(capsys)
    assert _ids(work / "out.dlq.jsonl") == ["b"] and not (work / "out.jsonl").exists()

    assert _run("-o", "out.jsonl", "--append") == 0
    assert _ids(work / "out.jsonl") == ["a"] and _ids(work / "out.dlq.jsonl") == ["b", "b"]
    assert _run("-o", "out.jsonl", "--append") == 0
    assert _ids(work / "out.jsonl") == ["a", "a"]

    assert _run("-o", "out.jsonl", "--overwrite") == 0
    assert _ids(work / "out.jsonl") == ["a"] and _ids(work / "out.dlq.jsonl") == ["b"]
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]

    capsys.readouterr()
    assert _run("-o", "out.jsonl", "--overwrite", "--append") == 2
    assert "not both" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "folder"], "is a folder"),
        (["-o", "afile/out.jsonl"], "is a file, not a folder"),
        (["-o", "new/out.jsonl", "--dlq", "folder"], "--dlq 'folder' is a folder"),
        (["-o", "new/out.jsonl", "--dlq", "afile/dead.jsonl"], "not a folder"),
        (["-o", "locked/out.jsonl"], "cannot write in"),
        (["-o", "-"], "--dlq"),
        (["-o", "new/out.jsonl", "--dlq", "new/out.jsonl"], "also the --output file"),
    ],
)
def test_bad_result_paths_fail_before_reading_with_one_line_and_leave_nothing(
    work: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    (work / "folder").mkdir()
    (work / "afile").write_text("x")
    (work / "locked").mkdir(mode=0o500)
    if os.geteuid() == 0 and args[1].startswith("locked"):
        pytest.skip("root writes into any folder")
    before = sorted(p.name for p in work.rglob("*"))
    # Reading the input would fail the test: stdin is a stream that must not be touched.
    read: list[int] = []

    class Untouchable(io.BytesIO):
        def read1(self, size: int = -1) -> bytes:
            read.append(size)
            return b""

        def read(self, size: int | None = -1) -> bytes:
            read.append(size or -1)
            return b""

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Untouchable()))
    code = main(["run", "shout.py", "-i", "-", "--no-progress", *args])
    assert code == 2
    assert message in _one_error_line(capsys)
    assert read == []
    assert sorted(p.name for p in work.rglob("*")) == before


def test_stdout_output_needs_a_dead_letter_file_and_prints_where_it_went(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("-o", "-", "--dlq", "dead/letters.jsonl") == 0
    captured = capsys.readouterr()
    assert [loads(line)["id"] for line in captured.out.splitlines()] == ["a"]
    assert _ids(work / "dead" / "letters.jsonl") == ["b"]
    assert "dead/letters.jsonl" in captured.err
    assert (work / "dead" / "letters.review.jsonl").exists()
    assert not (work / "streamflow.dlq.jsonl").exists()


def test_exit_status_is_1_when_the_run_fails_and_help_documents_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "fatal.py").write_text(FATAL)
    code = main(["run", "fatal.py", "-i", "in.jsonl", "-o", "out.jsonl", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "error: run stopped: RuntimeError: the stage broke"
    # What was decided before the failure is kept: every line is somewhere.
    assert (work / "out.dlq.jsonl").exists()

    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 done, 1 the run failed, 2 usage or configuration" in text
    assert "--overwrite" in text and "--append" in text


def test_a_device_is_written_in_place_and_never_replaced(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devices = sorted(Path(os.devnull).parent.iterdir())
    assert _run("-o", os.devnull) == 2  # nowhere beside a device for the dead letters
    assert "--dlq" in _one_error_line(capsys)
    # A device is not a result that exists: no --overwrite needed for it.
    assert _run("-o", os.devnull, "--dlq", "dead.jsonl") == 0
    # --overwrite (for the dead letters) writes the device in place: it stays a device.
    assert _run("-o", os.devnull, "--dlq", "dead.jsonl", "--overwrite") == 0
    assert Path(os.devnull).is_char_device()
    assert sorted(Path(os.devnull).parent.iterdir()) == devices
    assert _ids(work / "dead.jsonl") == ["b"] and (work / "dead.review.jsonl").exists()


def test_two_spellings_of_one_new_file_are_refused(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("-o", "new/../same.jsonl", "--dlq", "same.jsonl") == 2
    assert "also the --output file" in _one_error_line(capsys)
    assert not (work / "new").exists() and not (work / "same.jsonl").exists()


def test_a_sink_that_cannot_open_every_file_leaves_none_behind(tmp_path: Path) -> None:
    from streamflow.errors import ConfigError
    from streamflow.transports import JsonlSink

    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile"):
        JsonlSink(tmp_path / "out.jsonl", dlq=tmp_path / "afile" / "dead.jsonl", atomic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
