"""The Kafka daemon against a real broker: exactly-once outputs equal to replay, dead letters,
restarts that keep state, and two daemons sharing the work through re-keying."""

from __future__ import annotations

import time

import pytest
from bf_support import (
    DaemonThread,
    assert_matches_offline,
    assert_same_records,
    consume_all,
    kafka_section,
    make_config,
    produce,
    read_jsonl,
)

from broker_filter.daemon import Daemon
from broker_filter.metrics import Metrics
from broker_filter.outputs import decode
from broker_filter.pipeline import pipeline_from_config

pytestmark = pytest.mark.kafka

GARBAGE = [b"", b"\x00\x01\x02 not an alert", b"Obj\x01\x04\x14avro.codec"]


def _outputs(bootstrap: str, names: dict[str, str], expected_alerts: int, timeout: float = 180.0) -> dict[str, list]:
    """Committed output messages once classification + dead-letter records cover every input."""
    topics = [names["classification"], names["dead_letter"], names["novelty"]]

    def complete(messages: list) -> bool:
        return sum(m.topic() != names["novelty"] for m in messages) >= expected_alerts

    messages = consume_all(bootstrap, topics, complete, timeout)
    by_topic: dict[str, list] = {name: [] for name in topics}
    for message in messages:
        by_topic[message.topic()].append(message)
    return by_topic


def _daemon(config, inferencer, metrics=None) -> Daemon:
    metrics = metrics or Metrics()
    return Daemon(config, pipeline_from_config(config, metrics, inferencer), metrics)


def test_exactly_once_outputs_equal_replay_and_offline(kafka_bootstrap, topics, labelled_stream, replayed, inferencer):
    names = topics(input_partitions=2)
    keys = [object_id.encode() for object_id in labelled_stream.object_ids]
    produce(kafka_bootstrap, names["input"], labelled_stream.payloads + GARBAGE, keys + [None] * len(GARBAGE))
    config = make_config(kafka=kafka_section(kafka_bootstrap, names, "eos"))
    metrics = Metrics()
    total = len(labelled_stream.payloads) + len(GARBAGE)
    with DaemonThread(_daemon(config, inferencer, metrics)) as running:
        out = _outputs(kafka_bootstrap, names, total)
        assert running.stop() == 0

    records = [decode("classification", m.value()) for m in out[names["classification"]]]
    assert all(m.key().decode() == r["record_id"] for m, r in zip(out[names["classification"]], records, strict=True))
    assert all(r["alert_timestamp_ms"] is not None for r in records)
    # every input alert: exactly one record (classification or dead letter), equal to replay's
    assert_same_records(records, read_jsonl(replayed / "classifications.jsonl"))
    letters = out[names["dead_letter"]]
    assert sorted(m.value() or b"" for m in letters) == sorted(GARBAGE)
    assert all(dict(m.headers())["reason"] in {b"empty", b"not_avro", b"truncated"} for m in letters)
    novelty = [decode("novelty", m.value()) for m in out[names["novelty"]]]
    assert sorted(n["record_id"] for n in novelty) == sorted(r["record_id"] for r in records if r["novel"])
    assert_matches_offline(labelled_stream.path, records, inferencer.bundle)

    assert metrics.value("alerts_consumed_total") == total
    assert metrics.value("alerts_dead_lettered_total", reason="empty") == 1
    assert metrics.value("transactions_total", outcome="committed") >= 1
    assert metrics.value("transactions_total", outcome="aborted") == 0


def test_restart_mid_stream_keeps_state_and_loses_nothing(
    kafka_bootstrap, topics, labelled_stream, replayed, inferencer, tmp_path
):
    names = topics(input_partitions=1)
    config = make_config(kafka=kafka_section(kafka_bootstrap, names, "restart"), state={"path": str(tmp_path / "state.sqlite")})
    middle = len(labelled_stream.payloads) // 2
    produce(kafka_bootstrap, names["input"], labelled_stream.payloads[:middle])
    with DaemonThread(_daemon(config, inferencer)) as first:
        _outputs(kafka_bootstrap, names, middle)
        assert first.stop() == 0
    produce(kafka_bootstrap, names["input"], labelled_stream.payloads[middle:])
    with DaemonThread(_daemon(config, inferencer)) as second:
        out = _outputs(kafka_bootstrap, names, len(labelled_stream.payloads))
        assert second.stop() == 0
    records = [decode("classification", m.value()) for m in out[names["classification"]]]
    assert_same_records(records, read_jsonl(replayed / "classifications.jsonl"))


def test_at_least_once_mode_keys_outputs_for_deduplication(kafka_bootstrap, topics, labelled_stream, replayed, inferencer):
    names = topics(input_partitions=1)
    config = make_config(kafka=kafka_section(kafka_bootstrap, names, "alo", delivery="at_least_once"))
    produce(kafka_bootstrap, names["input"], labelled_stream.payloads)
    with DaemonThread(_daemon(config, inferencer)) as running:
        out = _outputs(kafka_bootstrap, names, len(labelled_stream.payloads))
        assert running.stop() == 0
    by_key = {m.key().decode(): decode("classification", m.value()) for m in out[names["classification"]]}
    assert_same_records(by_key.values(), read_jsonl(replayed / "classifications.jsonl"))


def test_two_daemons_in_one_group_share_objects_through_rekeying(
    kafka_bootstrap, topics, kafka_topic_factory, labelled_stream, replayed, inferencer, tmp_path
):
    from broker_filter.rekey import Rekeyer

    names = topics(input_partitions=1)
    rekeyed = kafka_topic_factory(2, prefix="rekeyed")
    state = str(tmp_path / "shared-state.sqlite")
    daemons, rekeyers = [], []
    for k in range(2):
        config = make_config(
            kafka=kafka_section(kafka_bootstrap, names, "pair", transactional_id=f"pair-{k}"),
            rekey={"enabled": True, "topic": rekeyed},
            state={"path": state},
        )
        metrics = Metrics()
        rekeyer = Rekeyer(config)
        rekeyers.append(rekeyer)
        pipeline = pipeline_from_config(config, metrics, inferencer)
        daemons.append(Daemon(config, pipeline, metrics, input_topics=(rekeyed,), upstream=rekeyer))
    for rekeyer in rekeyers:
        rekeyer.start()
    running = [DaemonThread(d).__enter__() for d in daemons]
    try:
        deadline = time.monotonic() + 60
        while not all(d._assigned for d in daemons) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(d._assigned for d in daemons), "both daemons should own a partition of the re-keyed topic"
        produce(kafka_bootstrap, names["input"], labelled_stream.payloads)
        out = _outputs(kafka_bootstrap, names, len(labelled_stream.payloads))
    finally:
        statuses = [r.stop() for r in running]
        for rekeyer in rekeyers:
            rekeyer.stop()
    assert statuses == [0, 0]
    records = [decode("classification", m.value()) for m in out[names["classification"]]]
    assert_same_records(records, read_jsonl(replayed / "classifications.jsonl"))
    produced = [d.metrics.value("outputs_produced_total", topic=names["classification"]) for d in daemons]
    assert all(n > 0 for n in produced), f"both daemons should have produced records: {produced}"


class _SlowModel:
    """The real inferencer, slowed down, noting whether the daemon had paused its partitions."""

    def __init__(self, inferencer, metrics) -> None:
        self.inferencer, self.metrics = inferencer, metrics
        self.bundle, self.n_min, self.model_bands = inferencer.bundle, inferencer.n_min, inferencer.model_bands
        self.paused_seen: list[float] = []

    def estimate_periods(self, lcs):
        return self.inferencer.estimate_periods(lcs)

    def score(self, requests, periods=None):
        time.sleep(0.3)
        self.paused_seen.append(self.metrics.value("partitions_paused"))
        return self.inferencer.score(requests, periods)


def test_backpressure_pauses_input_when_the_model_falls_behind(kafka_bootstrap, topics, labelled_stream, replayed, inferencer):
    names = topics(input_partitions=2)
    config = make_config(
        kafka=kafka_section(kafka_bootstrap, names, "pressure"),
        inference={"max_batch": 16, "queue_max": 32, "max_wait_ms": 10.0},
    )
    metrics = Metrics()
    slow = _SlowModel(inferencer, metrics)
    keys = [object_id.encode() for object_id in labelled_stream.object_ids]
    produce(kafka_bootstrap, names["input"], labelled_stream.payloads, keys)
    with DaemonThread(Daemon(config, pipeline_from_config(config, metrics, slow), metrics)) as running:
        out = _outputs(kafka_bootstrap, names, len(labelled_stream.payloads))
        assert running.stop() == 0
    assert max(slow.paused_seen) == 2, "both input partitions should have been paused while the model was busy"
    records = [decode("classification", m.value()) for m in out[names["classification"]]]
    assert_same_records(records, read_jsonl(replayed / "classifications.jsonl"))
