"""The daemon as deployed: ``broker-filter run`` in its own process on a real Kafka, scraped
by a real Prometheus through the committed config and rules, read by the dashboard's
queries, logging JSON, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from deploy_helpers import DEPLOY, METRIC_CONTRACT, REPO, PrometheusServer, exposed_families, free_port
from prometheus_client.parser import text_string_to_metric_families

from broker_filter.streams.archive import iter_archive
from broker_filter.streams.simulate import SimulationConfig, simulate

pytestmark = pytest.mark.kafka

GARBAGE = b"this is not an Avro alert"
LIVE_ALERTS = 40
METRIC_NAME = re.compile(r"\bbroker_filter_[a-z_]+\b")


def _accounted(metrics_url: str, names: dict[str, str]) -> float:
    """Inputs the daemon has committed a record for: classification records (every decoded
    alert gets one) plus dead-letter records, from its /metrics."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=5).text):
        if family.name == "broker_filter_outputs_produced":
            total += sum(sample.value for sample in family.samples if sample.name.endswith("_total")
                         and sample.labels["topic"] in (names["classification"], names["dead-letter"]))
    return total


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> list[bytes]:
    """The first alerts of a labelled ZTF stream simulated from the repository's real light
    curves: this test is about the deployment around the daemon, so a few dozen will do."""
    out = tmp_path_factory.mktemp("live-stream") / "alerts"
    simulate(REPO / "data" / "lightcurves", out, SimulationConfig(survey="ztf", max_objects=2, classes=("RRab", "SNIa"), seed=5))
    return [item.payload for item in iter_archive([out], order="time")][:LIVE_ALERTS]


def _config(tmp_path: Path, bootstrap: str, names: dict[str, str], port: int) -> Path:
    config = tmp_path / "broker-filter.toml"
    config.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{names['input']}-group"
input_topics = ["{names['input']}"]
classification_topic = "{names['classification']}"
novelty_topic = "{names['novelty']}"
dead_letter_topic = "{names['dead-letter']}"
transactional_id = "{names['input']}-0"
[state]
path = "{tmp_path / 'state.sqlite'}"
[inference]
device = "cpu"
max_batch = 256
max_wait_ms = 50.0
[metrics]
host = "127.0.0.1"
port = {port}
[logging]
level = "INFO"
format = "json"
""")
    return config


def _produce(bootstrap: str, topic: str, payloads: list[bytes]) -> int:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for payload in payloads:
        producer.produce(topic, payload)
    assert producer.flush(30) == 0
    return len(payloads)


def _wait_until_accounted(process: subprocess.Popen, metrics_url: str, names: dict[str, str], count: int,
                          log: Path) -> None:
    deadline = time.monotonic() + 240
    while True:
        assert process.poll() is None, f"daemon exited {process.returncode}: {log.read_text()[-2000:]}"
        try:
            if _accounted(metrics_url, names) >= count:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"daemon did not account for the stream: {log.read_text()[-2000:]}"
        time.sleep(0.5)


def _stop(process: subprocess.Popen, log: Path) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"daemon ignored SIGTERM for 60 s: {log.read_text()[-2000:]}")


def test_deployed_daemon(kafka_bootstrap: str, kafka_topic_factory, payloads: list[bytes], prometheus_tools,
                         tmp_path: Path) -> None:
    names = {kind: kafka_topic_factory(2, prefix=f"live-{kind}") for kind in ("input", "classification", "novelty", "dead-letter")}
    alerts_in = _produce(kafka_bootstrap, names["input"], [*payloads, GARBAGE])

    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "daemon.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "broker_filter", "run", "--config",
                                    str(_config(tmp_path, kafka_bootstrap, names, port))],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_until_accounted(process, metrics_url, names, alerts_in, log)
        assert httpx.get(metrics_url.replace("/metrics", "/ready"), timeout=5).status_code == 200  # the readiness probe
        _check_exposition(httpx.get(metrics_url, timeout=5).text)
        _check_prometheus(prometheus_tools, metrics_url, alerts_in, tmp_path)
    finally:
        status = _stop(process, log) if process.poll() is None else process.returncode
    assert status == 0, f"exit status {status} after SIGTERM: {log.read_text()[-2000:]}"
    _check_json_logs(log)


def _check_exposition(text: str) -> None:
    """Every agreed family is exported, and every dashboard query reads one of them."""
    families = exposed_families(text)
    for name in METRIC_CONTRACT:
        assert f"broker_filter_{name}" in families, f"the running daemon does not export broker_filter_{name}"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "broker-filter.json").read_text())
    for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
        for target in panel["targets"]:
            for metric in METRIC_NAME.findall(target["expr"]):
                family = re.sub(r"_(total|bucket|sum|count)$", "", metric)
                assert family in families, f"panel {panel['title']!r} reads {metric}, not exported by the daemon"


def _check_prometheus(tools, metrics_url: str, alerts_in: int, workdir: Path) -> None:
    """The committed config and rules, scraping the daemon: counts arrive, every rule
    evaluates, and a healthy daemon fires nothing."""
    prometheus = PrometheusServer(tools.prometheus, metrics_url.split("/")[2], workdir)
    try:
        def consumed_in_prometheus():
            result = prometheus.api("query", query="sum(broker_filter_alerts_consumed_total)")["result"]
            return result and float(result[0]["value"][1]) >= alerts_in

        prometheus.wait_for("the daemon's consumed count", consumed_in_prometheus)
        dead = prometheus.api("query", query="sum by (reason) (broker_filter_alerts_dead_lettered_total)")["result"]
        assert [sample["metric"]["reason"] for sample in dead] == ["not_avro"]
        committed = prometheus.api("query", query='sum(broker_filter_transactions_total{outcome="committed"})')["result"]
        assert float(committed[0]["value"][1]) >= 1

        def evaluated_rules():
            rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
            return rules if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules) else None

        for rule in prometheus.wait_for("every rule evaluated", evaluated_rules):
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        firing = [alert["labels"]["alertname"] for alert in prometheus.api("alerts")["alerts"] if alert["state"] == "firing"]
        assert firing == [], f"a healthy daemon fires {firing}"
    finally:
        prometheus.stop()


def _check_json_logs(log: Path) -> None:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the daemon logged nothing"
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record), line
