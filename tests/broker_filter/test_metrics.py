"""Prometheus metrics: the agreed names, a private registry, exposition on loopback."""

from __future__ import annotations

import socket
import urllib.request

from broker_filter.metrics import Metrics

AGREED = (
    "alerts_consumed_total",
    "alerts_decoded_total",
    "alerts_dead_lettered_total",
    "objects_held",
    "points_held",
    "below_minimum_total",
    "batch_size",
    "inference_latency_seconds",
    "end_to_end_latency_seconds",
    "scorings_total",
    "novelty_flags_total",
    "consumer_lag",
    "transactions_total",
    "outputs_produced_total",
    "last_output_timestamp_seconds",
    "inference_queue_depth",
    "partitions_paused",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_agreed_names_are_exposed_over_http_on_loopback():
    metrics = Metrics()
    metrics.alerts_decoded.labels("ztf").inc(3)
    metrics.alerts_dead_lettered.labels("not_avro").inc()
    metrics.scorings.labels("RRAB").inc()
    metrics.novelty_flags.labels("RRAB").inc()
    metrics.consumer_lag.labels("alerts", "0").set(7)
    metrics.transactions.labels("committed").inc()
    metrics.outputs_produced.labels("out").inc()
    metrics.batch_size.observe(10)
    metrics.inference_latency.observe(0.01)
    metrics.end_to_end_latency.observe(0.2)
    port = _free_port()
    metrics.serve("127.0.0.1", port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in AGREED:
        assert f"broker_filter_{name}" in text, name
    assert metrics.value("alerts_decoded_total", survey="ztf") == 3


def test_registries_are_separate():
    first, second = Metrics(), Metrics()
    first.alerts_consumed.inc()
    assert first.value("alerts_consumed_total") == 1 and second.value("alerts_consumed_total") == 0
