"""Shared by the deployment tests: repository paths, free ports, the metric contract that
the daemon, the alert rules and the dashboard share, and a live metrics endpoint from the
daemon's own metrics module with every agreed family carrying samples (labelled families
only appear in /metrics once a label set has been used).

A module of its own (not conftest.py) so that tests import it by a unique name."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from broker_filter.metrics import PREFIX, Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"


@dataclass(frozen=True)
class MetricSpec:
    """One metric family as agreed in the project's shared names (without the prefix)."""

    kind: str  # "counter", "gauge" or "histogram"
    labels: tuple[str, ...] = ()


# The agreed metric names (prefix broker_filter_): the contract the rules and the dashboard
# are written against, and which broker_filter.metrics must export exactly.
METRIC_CONTRACT: dict[str, MetricSpec] = {
    "alerts_consumed": MetricSpec("counter"),
    "alerts_decoded": MetricSpec("counter", ("survey",)),
    "alerts_dead_lettered": MetricSpec("counter", ("reason",)),
    "objects_held": MetricSpec("gauge"),
    "points_held": MetricSpec("gauge"),
    "below_minimum": MetricSpec("counter"),
    "batch_size": MetricSpec("histogram"),
    "inference_latency_seconds": MetricSpec("histogram"),
    "end_to_end_latency_seconds": MetricSpec("histogram"),
    "scorings": MetricSpec("counter", ("top_class",)),
    "novelty_flags": MetricSpec("counter", ("top_class",)),
    "consumer_lag": MetricSpec("gauge", ("topic", "partition")),
    "transactions": MetricSpec("counter", ("outcome",)),
    "outputs_produced": MetricSpec("counter", ("topic",)),
    "last_output_timestamp_seconds": MetricSpec("gauge"),
    "inference_queue_depth": MetricSpec("gauge"),
    "partitions_paused": MetricSpec("gauge"),
    "schema_registry_waits": MetricSpec("counter"),
    "points_trimmed": MetricSpec("counter", ("reason",)),
    "build_info": MetricSpec("gauge", ("version", "bundle_id", "classifier")),
    "served_energy": MetricSpec("histogram"),
    "top_class_probability": MetricSpec("histogram"),
    "novelty_p_value": MetricSpec("histogram"),
}


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# One plausible label value per agreed label name.
LABEL_VALUES = {
    "survey": "ztf",
    "reason": "decode_error",
    "top_class": "RR_Lyrae_FM",
    "topic": "ztf-alerts",
    "partition": "0",
    "outcome": "committed",
    "version": "0.1.0",
    "bundle_id": "d3fd45f1afaad46b",
    "classifier": "rnn-autoencoder-gmm",
}


@dataclass(frozen=True)
class LiveMetrics:
    metrics: Metrics
    url: str

    def scrape(self) -> str:
        return httpx.get(self.url, timeout=5).text


def collectors_by_family(metrics: Metrics) -> dict[str, MetricWrapperBase]:
    """The module's metric objects keyed by family name without the prefix (counters
    without ``_total``), found through prometheus-client's public ``describe()``."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                found[family.name.removeprefix(PREFIX)] = value
    return found


def record_activity(metrics: Metrics) -> None:
    """Touch every agreed family once with the agreed label names, the way a daemon that
    consumed, scored and committed would. ``.labels()`` raises if a name disagrees."""
    collectors = collectors_by_family(metrics)
    for name, spec in METRIC_CONTRACT.items():
        collector = collectors[name]
        if spec.labels:
            collector = collector.labels(**{label: LABEL_VALUES[label] for label in spec.labels})
        if spec.kind == "counter":
            collector.inc(5)
        elif spec.kind == "gauge":
            collector.set(time.time() if name == "last_output_timestamp_seconds" else 3)
        else:
            collector.observe(0.2)


def serve_live_metrics() -> LiveMetrics:
    """A :class:`Metrics` with activity recorded, served on a free loopback port through
    the module's own ``serve`` (the endpoint thread lives until the test process ends)."""
    metrics = Metrics()
    record_activity(metrics)
    port = free_port()
    metrics.serve("127.0.0.1", port)
    live = LiveMetrics(metrics, f"http://127.0.0.1:{port}/metrics")
    deadline = time.monotonic() + 10
    while True:
        try:
            live.scrape()
            return live
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def exposed_families(text: str) -> dict[str, tuple[str, set[str], set[str]]]:
    """family name -> (type, sample names, label names) parsed from an exposition, leaving
    out prometheus-client's ``*_created`` timestamps (bookkeeping, not measurements)."""
    families = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue
        sample_names = {sample.name for sample in family.samples if not sample.name.endswith("_created")}
        label_names = {label for sample in family.samples for label in sample.labels}
        families[family.name] = (family.type, sample_names, label_names - {"le"})
    return families


class PrometheusServer:
    """Prometheus on a free loopback port with the committed config, retargeted at
    ``target`` and sped up (1 s scrapes and rule evaluations)."""

    def __init__(self, binary: str, target: str, workdir: Path) -> None:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config_file}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/-/ready`` answers 200 (the API answers 503 while the TSDB opens)."""
        def ready() -> bool:
            return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200

        self.wait_for("readiness", ready, timeout)

    def api(self, path: str, **params: str) -> object:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, what: str, probe, timeout: float = 60.0):
        """Poll ``probe()`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                found = probe()
            except httpx.TransportError:
                found = None
            if found:
                return found
            time.sleep(0.25)
        pytest.fail(f"prometheus: {what} not seen within {timeout:.0f} s; log: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
