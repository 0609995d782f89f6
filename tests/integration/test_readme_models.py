"""The README's "Models" walkthrough as a user types it: the bundled server, then a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support_tickets"
TICKETS = 40


def test_readme_walkthrough_with_the_bundled_server_answers_tickets(tmp_path: Path) -> None:
    tickets = tmp_path / "tickets.jsonl"
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "generate_tickets.py"),
            "--count",
            str(TICKETS),
            "--seed",
            "7",
            "--out",
            str(tickets),
        ],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "streamflow.testing.openai_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:")
        env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-local"}
        output = tmp_path / "answers.jsonl"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamflow",
                "run",
                str(EXAMPLE / "pipeline.py"),
                "--input",
                str(tickets),
                "--output",
                str(output),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    dead = tmp_path / "answers.dlq.jsonl"
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    reasons = Counter(letter["error"]["type"] for letter in letters)
    malformed = reasons["DecodeError"] + reasons["PayloadInvalid"]
    # Every well-formed ticket is answered or parked for a person; none fails on the model.
    assert set(reasons) <= {"DecodeError", "PayloadInvalid"}, reasons
    assert len(answers) >= (TICKETS - malformed) // 2, (len(answers), reasons)
    labels = Counter(a["payload"]["classification"]["method"] for a in answers)
    assert labels["model"] > labels["rule"], labels
    assert all(a["payload"]["answer"] for a in answers)
