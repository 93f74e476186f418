"""Security: SCRAM-SHA-512 with secrets from the environment or a file and never echoed; a tampered
bundle refused with one clear line; the metrics endpoint bound where configured (loopback by default)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from broker_filter.config import config_from_mapping
from broker_filter.metrics import Metrics
from broker_filter_proving.reliability.harness import Deployment, write_config
from broker_filter.model.bundle import DEFAULT_BUNDLE_DIR
from broker_filter_proving.local_kafka import free_port


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker_filter", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _scram_config(broker, tmp_path, client: dict[str, str]):
    from broker_filter.streams.kafka_admin import ensure_topics

    deployment = Deployment.named(broker.sasl_bootstrap, f"scram-{time.monotonic_ns()}", client)
    ensure_topics(broker.bootstrap, {deployment.input_topic: 1})
    return write_config(tmp_path / "daemon.toml", deployment, logging={"level": "DEBUG", "format": "json"})


@pytest.mark.kafka
@pytest.mark.parametrize("source", ["env", "file"])
def test_scram_sha_512_secret_from_env_or_file_reaches_the_broker_and_is_never_printed(scram_kafka, tmp_path, source):
    user = scram_kafka.scram
    client = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user.username}
    env = {}
    if source == "env":
        client["sasl.password.env"] = "RELIABILITY_KAFKA_PASSWORD"
        env["RELIABILITY_KAFKA_PASSWORD"] = user.password
    else:
        secret = tmp_path / "kafka-password"
        secret.write_text(user.password + "\n")
        client["sasl.password.file"] = str(secret)
    result = _cli("check", "--skip-model", "--config", str(_scram_config(scram_kafka, tmp_path, client)), env=env)
    assert result.returncode == 0, result.stderr
    assert user.password not in result.stdout + result.stderr


@pytest.mark.kafka
def test_a_wrong_scram_password_stops_start_up_with_one_line_and_no_secret(scram_kafka, tmp_path):
    user = scram_kafka.scram
    wrong = "not-" + user.password
    client = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user.username,
              "sasl.password.env": "RELIABILITY_KAFKA_PASSWORD"}
    result = _cli("check", "--skip-model", "--config", str(_scram_config(scram_kafka, tmp_path, client)),
                  env={"RELIABILITY_KAFKA_PASSWORD": wrong})
    assert result.returncode != 0
    assert wrong not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("broker-filter check:")


def test_a_bundle_whose_files_do_not_match_its_manifest_is_refused(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE_DIR, bundle)
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    config = write_config(tmp_path / "daemon.toml", Deployment.named("127.0.0.1:9", "digest"), inference={"bundle": str(bundle)})
    result = _cli("check", "--config", str(config))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "sha256" in line and "does not match" in line and "Traceback" not in result.stderr


def _listening(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_the_metrics_endpoint_binds_where_configured_and_loopback_by_default(host):
    port = free_port()
    config = config_from_mapping({"metrics": {"port": port, **({"host": host} if host else {})}}, {})
    Metrics().serve(config.metrics.host, config.metrics.port)
    assert _listening(port) == {host or "127.0.0.1"}


@pytest.mark.kafka
def test_registry_credentials_in_its_url_reach_no_log_header_metric_or_check_output(kafka_bootstrap, deployment, ztf_seeds, tmp_path):
    """``http://user:password@registry``: the password must appear nowhere a person or a pipeline reads."""
    import struct

    import httpx

    from broker_filter_proving.reliability.bad_input import sentinel
    from broker_filter_proving.reliability.harness import DaemonProcess, OutputWatcher, produce
    from broker_filter_proving.reliability.scenarios import create_topics
    from broker_filter_proving.schema_registry import LocalSchemaRegistry

    secret = "s3cret-registry-password"
    target = deployment(kafka_bootstrap)
    create_topics(target, 1)
    wire = b"\x00" + struct.pack(">I", 7) + b"\x02\x04"  # a wire-format message whose schema id the registry lacks
    _, valid = sentinel(ztf_seeds)
    produce(kafka_bootstrap, target.input_topic, [wire, valid], [None, None])
    port = free_port()
    with LocalSchemaRegistry({}) as registry:
        url = registry.url.replace("http://", f"http://reader:{secret}@")
        config = write_config(tmp_path / "daemon.toml", target, state={"path": str(tmp_path / "state.sqlite")}, metrics={"port": port},
                              decode={"schema_registry_url": url}, logging={"level": "DEBUG", "format": "text"})
        with OutputWatcher(target) as watcher:
            daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
            try:
                watcher.wait_for(2, timeout=180, alive=daemon.alive)
                metrics_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            finally:
                daemon.terminate()
            messages = watcher.messages()
        checked = _cli("check", "--skip-model", "--config", str(config))
    (letter,) = [headers for topic, _, headers in messages if topic == target.dead_letter_topic]
    assert letter["reason"] == b"unknown_schema" and b"http://***@127.0.0.1" in letter["detail"]
    channels = {"daemon log": (tmp_path / "daemon.log").read_text(), "metrics": metrics_text,
                "dead-letter headers": repr(letter), "check output": checked.stdout + checked.stderr}
    assert {name: secret in text for name, text in channels.items()} == dict.fromkeys(channels, False)
