"""The config: TOML + environment overrides, one clear error per mistake, the example file is complete."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from broker_filter.config import Config, ConfigError, config_from_mapping, load_config

EXAMPLE = Path(__file__).parents[2] / "deploy" / "config" / "broker-filter.toml"


def test_defaults_are_valid_and_metrics_bind_to_loopback():
    config = config_from_mapping({})
    assert config.metrics.host == "127.0.0.1"
    assert config.kafka.delivery == "exactly_once"


def test_file_values_then_environment_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "a:1"\ninput_topics = ["x"]\n'
        '[kafka.client]\n"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "SCRAM-SHA-512"\n'
        "[inference]\nmax_batch = 64\nmixed_precision = false\n"
    )
    env = {
        "BROKER_FILTER_KAFKA_BOOTSTRAP_SERVERS": "b:2",
        "BROKER_FILTER_KAFKA_INPUT_TOPICS": "t1, t2",
        "BROKER_FILTER_INFERENCE_MIXED_PRECISION": "true",
        "BROKER_FILTER_SCORING_MIN_INTERVAL_S": "30",
        "BROKER_FILTER_KAFKA_CLIENT": '{"security.protocol": "SSL", "ssl.ca.location": "/ca.pem"}',
    }
    config = load_config(path, env)
    assert config.kafka.bootstrap_servers == "b:2"
    assert config.kafka.input_topics == ("t1", "t2")
    assert config.inference.max_batch == 64 and config.inference.mixed_precision is True
    assert config.scoring.min_interval_s == 30.0
    assert config.kafka.client == {"security.protocol": "SSL", "ssl.ca.location": "/ca.pem"}


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"kafak": {}}, {}, "unknown config section"),
        ({"kafka": {"bootstrap": "x"}}, {}, "[kafka] unknown key"),
        ({"inference": {"max_batch": "big"}}, {}, "[inference] max_batch: expected an integer"),
        ({"kafka": {"delivery": "maybe"}}, {}, "[kafka] delivery: expected one of"),
        ({"scoring": {"min_points": 0}}, {}, "[scoring] min_points: must be at least 1"),
        ({"kafka": {"novelty_topic": "broker-filter.classifications"}}, {}, "must all differ"),
        ({"kafka": {"client": {"group.id": "g"}}}, {}, "client.group.id"),
        ({}, {"BROKER_FILTER_INFERENCE_MAX_BATCH": "ten"}, "BROKER_FILTER_INFERENCE_MAX_BATCH: expected a number"),
        ({}, {"BROKER_FILTER_REKEY_ENABLED": "perhaps"}, "expected true or false"),
    ],
)
def test_mistakes_give_one_line_naming_the_key(raw, env, message):
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})


def test_example_config_sets_every_key_and_loads():
    raw = tomllib.loads(EXAMPLE.read_text())
    for name, section_type in Config.sections().items():
        assert set(raw[name]) == {f.name for f in fields(section_type)}, name
    load_config(EXAMPLE, {})
