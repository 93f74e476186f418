"""Prometheus metrics: the agreed names, a private registry, exposition on loopback."""

from __future__ import annotations

import socket
import urllib.request

import pytest

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


def test_a_replay_exports_its_build_and_the_distribution_of_what_it_served(labelled_stream, inferencer, tmp_path):
    """What a drift panel reads: one observation per scoring, and which bundle made them."""
    import json

    from bf_support import make_config

    from broker_filter import __version__
    from broker_filter.pipeline import CLASSIFIER, pipeline_from_config
    from broker_filter.replay import replay

    metrics = Metrics()
    pipeline = pipeline_from_config(make_config(), metrics, inferencer)
    replay([labelled_stream.path], tmp_path, pipeline, max_batch=256, progress=False)
    scored = [r for r in map(json.loads, (tmp_path / "classifications.jsonl").read_text().splitlines()) if r["status"] == "scored"]
    assert scored
    assert metrics.value("build_info", version=__version__, bundle_id=inferencer.bundle.bundle_id, classifier=CLASSIFIER) == 1
    for family in ("served_energy", "top_class_probability", "novelty_p_value"):
        assert metrics.value(f"{family}_count") == len(scored), family
    low = sum(1 for r in scored if r["novelty_p_value"] <= 0.05)
    assert metrics.value("novelty_p_value_bucket", le="0.05") == low
    assert metrics.registry.get_sample_value("process_resident_memory_bytes") > 0  # the standard process collector


def test_ready_answers_503_until_the_daemon_says_it_is_ready():
    import urllib.error

    metrics = Metrics()
    port = _free_port()
    metrics.serve("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/ready"
    with pytest.raises(urllib.error.HTTPError) as starting:
        urllib.request.urlopen(url, timeout=10)
    assert starting.value.code == 503
    metrics.ready.set()
    assert urllib.request.urlopen(url, timeout=10).status == 200
    assert b"broker_filter_" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
