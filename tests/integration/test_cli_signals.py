"""`streamflow run` as a process: SIGTERM drains and exits 0; metrics are served while it runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

PIPELINE = textwrap.dedent(
    """
    import asyncio
    from streamflow import Pipeline, Stage, map_async

    async def slow(event):
        await asyncio.sleep(0.02)
        return event

    pipeline = Pipeline("slow", [Stage("work", map_async(slow, concurrency=8))], window=16)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_sigterm_stops_reading_drains_and_exits_zero_with_metrics_served(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(PIPELINE)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id":"e{i}"}}\n' for i in range(20_000)))
    out = tmp_path / "out.jsonl"
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(tmp_path / "slow.py"),
            "-i",
            str(source),
            "-o",
            str(out),
            "--no-progress",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:

        def metrics_up() -> bool:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return False
            return status == 200 and 'streamflow_events_total{outcome="ok",pipeline="slow"' in body

        _wait_for(metrics_up)
        status, health = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and health.strip() == "ok"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "stopped early" in err
    written = out.read_text().splitlines()
    assert 0 < len(written) < 20_000
    ids = [line.split('"id":"', 1)[1].split('"', 1)[0] for line in written]
    assert len(set(ids)) == len(ids)
    dead = (tmp_path / "out.dlq.jsonl").read_text().splitlines()
    assert dead == []  # in-flight work finished within the drain timeout
