"""The README's shell blocks run as written, in a copy of the examples.

Every ``sh`` block runs, in order, with bash (``-euo pipefail``), unless the
line before it says ``<!-- readme-test: skip: <reason> -->`` (a block that
needs a terminal, a model endpoint or a long-running server). The skipped
``make run`` is replaced by the recipe of the Makefile's ``run`` target, so
the blocks that read its results (the review walkthrough) find them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamflow.events import loads

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^```sh\n(.*?)^```\n", re.S | re.M)
_SKIP = re.compile(r"<!-- readme-test: skip: (?P<reason>[^>]*\S) -->\n\Z")


@dataclass(frozen=True)
class Block:
    line: int
    text: str
    skip: str | None


def readme_blocks() -> list[Block]:
    """Every ``sh`` block of the README, with the reason it is skipped (None: it runs)."""
    readme = (ROOT / "README.md").read_text()
    blocks = []
    for match in _FENCE.finditer(readme):
        before = readme[: match.start()]
        skip = _SKIP.search(before)
        blocks.append(
            Block(before.count("\n") + 1, match.group(1), skip.group("reason") if skip else None)
        )
    return blocks


def _make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target, continuation lines joined."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None, f"no {target} target in the Makefile"
    return [line.strip() for line in recipe.group(1).splitlines()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like a checkout after ``make run``: examples, .venv/bin, out/."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(
        ROOT / "examples",
        root / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "tickets.jsonl"),
    )
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    # A home folder with an inbox of documents, for the blocks that read ~/inbox.
    shutil.copytree(
        ROOT / "examples" / "document_intake" / "data" / "docs", root / "home" / "inbox"
    )
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool, module in (("streamflow", "streamflow"), ("python", None)):
        script = bin_dir / tool
        target = f'"{sys.executable}" -m {module}' if module else f'"{sys.executable}"'
        script.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        script.chmod(0o755)
    variables = {
        "$(BIN)/": ".venv/bin/",
        "$(TICKETS)": "examples/support_tickets/data/tickets.jsonl",
        "$@": "examples/support_tickets/data/tickets.jsonl",
    }
    # `make run`, without its install step: the tickets, then the run.
    for line in [*_make_recipe("$(TICKETS)"), *_make_recipe("run")]:
        for name, value in variables.items():
            line = line.replace(name, value)
        _bash(root, line)
    return root


def _bash(cwd: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STREAMFLOW_", "OPENAI_", "SUPPORT_", "DOCUMENT_INTAKE_"))
    }
    env["HOME"] = str(cwd / "home")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stderr[-3000:]}"
    return done


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_skipped_block_says_why_and_the_walkthroughs_are_not_skipped() -> None:
    blocks = readme_blocks()
    assert blocks, "no sh blocks found in the README"
    running = "\n".join(block.text for block in blocks if block.skip is None)
    for command in ("streamflow run", "review approve", "review reject", "trace", "--input -"):
        assert command in running, f"no README block that runs {command!r} is tested"


# A command at the start of a shell command (line start, after | ; & && || or $( ).
_COMMAND = re.compile(r"(?:^|[|;&(]|\$\()\s*(?P<tool>python3?|pip3?|streamflow|uvicorn)\b", re.M)


def test_running_blocks_call_the_tools_of_the_checkout_not_bare_names() -> None:
    # A reader runs the blocks after `make run`, with no virtualenv active: a bare
    # `python` or `streamflow` is another interpreter (or none: Debian has no
    # `python`), so a block that passes here on a developer's PATH fails in CI.
    for block in readme_blocks():
        if block.skip is not None:
            continue
        code = "\n".join(line.split("#", 1)[0] for line in block.text.splitlines())
        bare = [m.group("tool") for m in _COMMAND.finditer(code)]
        assert not bare, f"README line {block.line}: call .venv/bin/{bare[0]}, not {bare[0]}"


def test_readme_shell_blocks_run_as_written(sandbox: Path) -> None:
    ran = []
    for block in readme_blocks():
        if block.skip is not None:
            continue
        script = re.sub(r"--metrics-port \d+", f"--metrics-port {_free_port()}", block.text)
        _bash(sandbox, script)
        ran.append(block.line)
    assert len(ran) >= 3

    out = sandbox / "out"
    # The review walkthrough decided what it says it decided.
    decisions = _jsonl(out / "support_tickets.decisions.jsonl")
    assert [(d["id"], d["decision"]) for d in decisions] == [
        ("T000045", "approved"),
        ("T000081", "rejected"),
    ]
    answers = {e["id"]: e for e in _jsonl(out / "support_tickets.jsonl")}
    steps = [r["step"] for r in answers["T000045"]["trace"]]  # type: ignore[index]
    assert steps[steps.index("review") + 1 :] == ["retrieve", "generate", "check"]
    # The piped run wrote answers to stdout and its dead letters where --dlq said.
    assert (out / "stdin.jsonl").read_text().strip()
    assert (out / "stdin.dlq.jsonl").exists()
