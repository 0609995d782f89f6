"""Kafka connection settings: environment names, aliases, SASL/TLS mapping, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient

from streamflow.cli import main
from streamflow.errors import ConfigError
from streamflow.transports.kafka import KafkaSettings, make_admin, make_consumer, make_producer
from streamflow.transports.kafka._clients import _arguments

SECRET = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMFLOW_KAFKA_") or name == "STREAMFLOW_BROKER":
            monkeypatch.delenv(name)
    return monkeypatch


class Tokens(AbstractTokenProvider):  # type: ignore[misc]
    async def token(self) -> str:
        return "a-token"


TOKENS = Tokens()


async def test_environment_names_are_aiokafkas_under_the_prefix(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    clean_env.setenv("STREAMFLOW_KAFKA_CLIENT_ID", "desk")
    clean_env.setenv("STREAMFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("STREAMFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("STREAMFLOW_KAFKA_SASL_USERNAME", "alice")
    clean_env.setenv("STREAMFLOW_KAFKA_SASL_PASSWORD", SECRET)
    clean_env.setenv("STREAMFLOW_KAFKA_SSL_CHECK_HOSTNAME", "false")
    clean_env.setenv("STREAMFLOW_KAFKA_FETCH_MAX_WAIT_MS", "25")
    clean_env.setenv("STREAMFLOW_KAFKA_OPTIONS", '{"metadata_max_age_ms": 60000}')

    settings = KafkaSettings.load()

    assert settings.bootstrap_servers == "k1:9093,k2:9093"
    assert settings.client_id == "desk"
    assert settings.ssl_check_hostname is False
    assert settings.fetch_max_wait_ms == 25
    kwargs = _arguments(AIOKafkaConsumer, settings, {})
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "alice"
    assert kwargs["sasl_plain_password"] == SECRET
    assert kwargs["metadata_max_age_ms"] == 60000
    # aiokafka itself accepts the combination (its constructors check SASL arguments).
    make_consumer(settings)
    make_producer(settings)
    await make_admin(settings).close()


def test_streamflow_broker_is_an_alias_and_the_prefixed_name_wins(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("STREAMFLOW_BROKER", "old:9092")
    assert KafkaSettings.load().bootstrap_servers == "old:9092"
    clean_env.setenv("STREAMFLOW_KAFKA_BOOTSTRAP_SERVERS", "new:9092")
    assert KafkaSettings.load().bootstrap_servers == "new:9092"
    # A flag beats both; the earlier keyword still works.
    assert KafkaSettings.load(bootstrap_servers="flag:9092").bootstrap_servers == "flag:9092"
    assert KafkaSettings(bootstrap="kw:9092").bootstrap == "kw:9092"


def test_oauthbearer_takes_a_token_provider_from_python_or_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    given = KafkaSettings(
        bootstrap_servers="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_provider=TOKENS,
    )
    assert _arguments(AIOKafkaProducer, given, {})["sasl_oauth_token_provider"] is TOKENS

    clean_env.setenv("STREAMFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("STREAMFLOW_KAFKA_SASL_MECHANISM", "OAUTHBEARER")
    clean_env.setenv("STREAMFLOW_KAFKA_SASL_OAUTH_TOKEN_PROVIDER", f"{__name__}:TOKENS")
    from_env = KafkaSettings.load(bootstrap_servers="k:9093")
    assert _arguments(AIOKafkaAdminClient, from_env, {})["sasl_oauth_token_provider"] is TOKENS


def test_tls_files_become_an_ssl_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    settings = KafkaSettings(
        bootstrap_servers="k:9093", security_protocol="SSL", ssl_cafile=str(cafile)
    )

    context = _arguments(AIOKafkaConsumer, settings, {})["ssl_context"]

    assert context.check_hostname is True
    assert len(context.get_ca_certs()) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SECURITY_PROTOCOL": "SASL_SSL"}, "needs a sasl_mechanism"),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_PASSWORD": SECRET},
            "STREAMFLOW_KAFKA_SASL_USERNAME",
        ),
        ({"SECURITY_PROTOCOL": "TLS"}, "STREAMFLOW_KAFKA_SECURITY_PROTOCOL"),
        ({"OPTIONS": '{"group_id": "x"}'}, "cannot be passed through"),
        ({"OPTIONS": '{"lingr_ms": 5}'}, "lingr_ms"),
    ],
    ids=["sasl-no-mechanism", "plain-no-user", "bad-protocol", "reserved-option", "typo-option"],
)
def test_bad_settings_fail_at_start_in_one_line_without_the_secret(
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str,
) -> None:
    for key, value in env.items():
        clean_env.setenv(f"STREAMFLOW_KAFKA_{key}", value)
    pipeline = tmp_path / "p.py"
    pipeline.write_text(
        "from streamflow import Pipeline, Stage, map_async\n"
        "async def f(e):\n    return e\n"
        "pipeline = Pipeline('p', [Stage('s', map_async(f))])\n"
    )

    code = main(["worker", str(pipeline), "--stage", "s", "--broker", "127.0.0.1:1"])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert SECRET not in err


def test_the_password_never_shows_in_repr_or_errors() -> None:
    settings = KafkaSettings(
        bootstrap_servers="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="alice",
        sasl_password=SECRET,
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in settings.model_dump_json()
    with pytest.raises(ConfigError) as caught:
        KafkaSettings.load(
            bootstrap_servers="k:9093",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="alice",
            sasl_password=SECRET,
            request_timeout_ms=0,
        )
    assert SECRET not in str(caught.value)
