"""Start and stop a local redis-server on a free port, without persistence, for tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from kafka_broker import free_port

__all__ = ["redis_binary", "running_redis"]


def redis_binary() -> str | None:
    """Return the redis-server path, or None when it is not installed."""
    return shutil.which("redis-server")


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def running_redis(binary: str, *, startup_timeout: float = 20.0) -> Iterator[str]:
    """Run redis-server on a free 127.0.0.1 port; yield its ``redis://`` URL.

    Raises:
        RuntimeError: it exited or did not answer PING in time (with its log).
    """
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="streamflow-redis-")
    log_path = f"{workdir}/redis.log"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--logfile",
            log_path,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(OSError), open(log_path) as handle:
                    raise RuntimeError(f"redis-server did not start:\n{handle.read()[-2000:]}")
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
