""".ci/run, run against stand-ins for make and apt-get: it lints, builds docs when it can, tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_LOGGING_STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n'


def _checkout(tmp_path: Path, makefile: str, *, failing: str = "") -> tuple[Path, Path]:
    """A copy of .ci/run in a folder with ``makefile``, and a PATH of stand-in tools."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "Makefile").write_text(makefile)
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("make", "apt-get", "systemctl", "service"):
        stub = tools / name
        stub.write_text(_LOGGING_STUB + (f'[ "$1" = "{failing}" ] && exit 3\n' if failing else ""))
        stub.chmod(0o755)
    (tools / "id").write_text("#!/bin/sh\necho 1000\n")
    (tools / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for name in ("id", "sudo"):
        (tools / name).chmod(0o755)
    for name in ("dirname", "basename", "grep", "sh"):
        real = shutil.which(name)
        assert real is not None, name
        (tools / name).symlink_to(real)
    return repo, tools


def _run(repo: Path, tools: Path, tmp_path: Path) -> tuple[int, list[str]]:
    calls = tmp_path / "calls"
    calls.touch()
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, str(repo / ".ci" / "run")],
        env={"PATH": str(tools), "CALLS": str(calls)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, calls.read_text().splitlines()


@pytest.mark.parametrize("with_docs", [False, True], ids=["no-docs-target", "docs-target"])
def test_ci_installs_missing_tools_in_one_line_then_lints_builds_docs_and_tests(
    tmp_path: Path, with_docs: bool
) -> None:
    makefile = "lint:\n\ttrue\ntest:\n\ttrue\n" + ("docs:\n\ttrue\n" if with_docs else "")
    repo, tools = _checkout(tmp_path, makefile)
    code, calls = _run(repo, tools, tmp_path)
    assert code == 0
    installs = [c for c in calls if c.startswith("apt-get") and " install " in c]
    assert len(installs) == 1 and "prometheus" in installs[0].split()
    # What is there is not installed again (make is), what is not is (no python3 here).
    assert "make" not in installs[0].split() and "python3-venv" in installs[0].split()
    makes = [c for c in calls if c.startswith("make")]
    assert makes == (
        ["make lint", "make docs", "make test"] if with_docs else ["make lint", "make test"]
    )


def test_a_lint_failure_fails_ci_before_the_tests(tmp_path: Path) -> None:
    repo, tools = _checkout(tmp_path, "lint:\n\tfalse\ntest:\n\ttrue\n", failing="lint")
    code, calls = _run(repo, tools, tmp_path)
    assert code != 0
    assert [c for c in calls if c.startswith("make")] == ["make lint"]
