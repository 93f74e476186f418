"""Client properties: secrets resolved from files and the environment, redacted for logs."""

from __future__ import annotations

import pytest

from broker_filter.streams.kafka_config import KafkaConfigError, client_config, redact


def test_password_comes_from_a_file_without_its_newline(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = client_config("b:9092", {"sasl.username": "alice", "sasl.password.file": str(secret)})
    assert config == {"bootstrap.servers": "b:9092", "sasl.username": "alice", "sasl.password": "s3cret"}


def test_password_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_PW", "from-env")
    assert client_config("b:9092", {"sasl.password.env": "KAFKA_PW"})["sasl.password"] == "from-env"


def test_missing_secret_file_and_variable_are_named_in_the_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(KafkaConfigError, match="sasl.password.file"):
        client_config("b:9092", {"sasl.password.file": str(tmp_path / "absent")})
    with pytest.raises(KafkaConfigError, match="NOT_SET_ANYWHERE"):
        client_config("b:9092", {"sasl.password.env": "NOT_SET_ANYWHERE"})


def test_a_secret_given_twice_is_refused(tmp_path) -> None:
    with pytest.raises(KafkaConfigError, match="both"):
        client_config("b:9092", {"sasl.password": "x", "sasl.password.env": "Y"})


def test_our_semantics_win_over_user_properties() -> None:
    config = client_config("b:9092", {"enable.auto.commit": True}, **{"enable.auto.commit": False})
    assert config["enable.auto.commit"] is False


def test_redact_masks_secrets_at_any_depth_and_keeps_the_rest() -> None:
    config = {
        "kafka": {
            "bootstrap_servers": "b:9092",
            "client": {
                "sasl.username": "alice",
                "sasl.password": "s3cret",
                "ssl.key.password": "k3y",
                "sasl.jaas.config": "ScramLoginModule required password=p;",
                "sasl.password.file": "/run/secrets/kafka",
            },
        }
    }
    masked = redact(config)
    client = masked["kafka"]["client"]
    assert client == {
        "sasl.username": "alice",
        "sasl.password": "***",
        "ssl.key.password": "***",
        "sasl.jaas.config": "***",
        "sasl.password.file": "/run/secrets/kafka",
    }
    assert "s3cret" not in repr(masked) and config["kafka"]["client"]["sasl.password"] == "s3cret"


def test_url_credentials_are_masked_in_text_and_in_config_values() -> None:
    from broker_filter.streams.kafka_config import redact_urls

    assert redact_urls("GET http://user:pa55@host:8081/x failed") == "GET http://***@host:8081/x failed"
    assert redact_urls("https://token@host/path and ftp://a@b") == "https://***@host/path and ftp://***@b"
    assert redact_urls("no url here, user@example.org stays") == "no url here, user@example.org stays"
    assert redact({"schema_registry_url": "http://u:p@r:1"}) == {"schema_registry_url": "http://***@r:1"}
