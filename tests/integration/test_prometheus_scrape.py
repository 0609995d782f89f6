"""A real Prometheus server scrapes two stage workers and answers for streamflow_events_total."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from streamflow.events import dumps

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus]

PIPELINE = textwrap.dedent(
    """
    from streamflow import Pipeline, Stage, map_async


    async def tag(event):
        return event.with_payload({{**event.payload, "tagged": True}})


    async def answer(event):
        return event.with_payload({{**event.payload, "answer": "thanks"}})


    pipeline = Pipeline(
        "{name}",
        [
            Stage("tag", map_async(tag, concurrency=4, name="tag")),
            Stage("answer", map_async(answer, concurrency=4, name="answer")),
        ],
    )
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.loads(response.read())
    except OSError:
        return []
    result: list[dict[str, object]] = body.get("data", {}).get("result", [])
    return result


def test_prometheus_scrapes_events_total_of_two_workers(tmp_path: Path, kafka_broker: str) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus binary not found; apt-get install -y prometheus")
    name = f"scraped{uuid.uuid4().hex[:8]}"
    pipeline_file = tmp_path / "pipeline.py"
    pipeline_file.write_text(PIPELINE.format(name=name))
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(dumps({"id": f"e{n}", "text": "hi"}) + b"\n" for n in range(50)))
    ports = {"tag": _free_port(), "answer": _free_port()}
    prometheus_port = _free_port()
    config = tmp_path / "prometheus.yml"
    targets = ", ".join(f'"127.0.0.1:{port}"' for port in ports.values())
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: streamflow\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    processes: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs.txt"
    with logs.open("wb") as log:
        try:
            for stage, port in ports.items():
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "streamflow",
                            "worker",
                            str(pipeline_file),
                            "--stage",
                            stage,
                            "--broker",
                            kafka_broker,
                            "--metrics-port",
                            str(port),
                            "--create-topics",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            produced = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "streamflow",
                    "produce",
                    str(pipeline_file),
                    "--broker",
                    kafka_broker,
                    "--input",
                    str(source),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert produced.returncode == 0, produced.stderr

            query = f'sum by (stage) (streamflow_events_total{{pipeline="{name}",outcome="ok"}})'
            deadline = time.monotonic() + 90
            found: dict[str, float] = {}
            while time.monotonic() < deadline:
                found = {
                    str(row["metric"]["stage"]): float(row["value"][1])  # type: ignore[index]
                    for row in _query(prometheus_port, query)
                }
                if found.get("tag") == 50 and found.get("answer") == 50:
                    break
                time.sleep(0.5)
            up = _query(prometheus_port, f'streamflow_up{{pipeline="{name}"}}')
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    assert found == {"tag": 50.0, "answer": 50.0}, logs.read_text(errors="replace")[-3000:]
    assert {str(row["metric"]["stage"]) for row in up} == {"tag", "answer"}  # type: ignore[index]
