"""The Prometheus configuration and alert rules, checked by promtool and run by a real
Prometheus server that scrapes the daemon's metrics module."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from deploy_helpers import DEPLOY, METRIC_CONTRACT, PrometheusServer, collectors_by_family, serve_live_metrics

PROMETHEUS_DIR = DEPLOY / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules" / "broker-filter.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "broker-filter.test.yml"
METRIC_NAME = re.compile(r"\bbroker_filter_[a-z_]+\b")


def _promtool(tools, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tools.promtool, *args], capture_output=True, text=True, timeout=60)


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_config(prometheus_tools) -> None:
    result = _promtool(prometheus_tools, "check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_rules(prometheus_tools) -> None:
    result = _promtool(prometheus_tools, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_and_stay_quiet_as_their_unit_tests_expect(prometheus_tools) -> None:
    result = subprocess.run(
        [prometheus_tools.promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in _alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it stays quiet"


def test_rules_read_only_metrics_the_daemon_exports() -> None:
    exported = {f"broker_filter_{name}{suffix}"
                for name, spec in METRIC_CONTRACT.items()
                for suffix in {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}[spec.kind]}
    for rule in _alert_rules():
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used <= exported, f"{rule['alert']} reads unknown metrics {sorted(used - exported)}"


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


# --- a real Prometheus server -------------------------------------------------------------


@pytest.fixture
def live_metrics():
    return serve_live_metrics()


@pytest.fixture
def prometheus(prometheus_tools, live_metrics, tmp_path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(prometheus_tools.prometheus, live_metrics.url.split("/")[2], tmp_path)
    yield server
    server.stop()


def test_prometheus_scrapes_every_metric_and_evaluates_every_rule(prometheus, live_metrics) -> None:
    def scraped_families():
        result = prometheus.api("query", query='count by (__name__) ({__name__=~"broker_filter_.+"})')
        return {sample["metric"]["__name__"] for sample in result["result"]}

    names = prometheus.wait_for("our metrics", scraped_families)
    for name, spec in METRIC_CONTRACT.items():
        sample = f"broker_filter_{name}" + {"counter": "_total", "gauge": "", "histogram": "_count"}[spec.kind]
        assert sample in names, f"{sample} not returned by Prometheus"

    consumed = prometheus.api("query", query="sum(broker_filter_alerts_consumed_total)")["result"]
    assert float(consumed[0]["value"][1]) == live_metrics.metrics.value("alerts_consumed_total")

    def evaluated_rules():
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        done = [rule for rule in rules if not rule["lastEvaluation"].startswith("0001")]
        return rules if rules and len(done) == len(rules) else None

    rules = prometheus.wait_for("every rule evaluated", evaluated_rules)
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in _alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"


def test_aborted_transactions_in_the_daemon_fire_the_alert_in_prometheus(prometheus, live_metrics) -> None:
    """The whole path: the metrics module counts aborts, Prometheus scrapes them, the rule
    sees the increase and fires (this rule has no ``for``, so it fires on evaluation)."""
    aborted = collectors_by_family(live_metrics.metrics)["transactions"].labels(outcome="aborted")
    prometheus.wait_for("the aborted series at zero", lambda: prometheus.api(
        "query", query='broker_filter_transactions_total{outcome="aborted"}')["result"])
    assert not [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "BrokerFilterTransactionAborts"]

    aborted.inc(10)

    def firing():
        return [alert for alert in prometheus.api("alerts")["alerts"]
                if alert["labels"]["alertname"] == "BrokerFilterTransactionAborts" and alert["state"] == "firing"]

    (alert,) = prometheus.wait_for("BrokerFilterTransactionAborts firing", firing)
    assert alert["labels"]["severity"] == "warning"
