"""The re-keying stage on the real broker: a valid alert too large for the re-keyed topic is a
dead letter, not a dead stage; a topic the daemon creates takes every alert the decoder accepts."""

from __future__ import annotations

import time
import uuid

import pytest
from bf_support import kafka_section, make_config

from broker_filter.preflight import ClusterView, ensure_output_topics
from broker_filter.rekey import REKEYED_MESSAGE_MAX_BYTES, Rekeyer
from broker_filter.streams.kafka import KafkaSink, KafkaSource, ensure_topics
from broker_filter.streams.kafka_admin import delete_topics, topic_max_message_bytes
from broker_filter_proving.reliability.craft import container, copy_record, history_points, simulate_seeds

pytestmark = pytest.mark.kafka
INPUT_MAX = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def alerts(tmp_path_factory) -> tuple[bytes, bytes]:
    """(a valid ZTF alert of about 2 MB: 15,000 history points, a valid one of a few KB)."""
    seeds = simulate_seeds(tmp_path_factory.mktemp("seeds"), "ztf", max_objects=2)
    small = copy_record(seeds.with_history(min_points=3))
    big = copy_record(small)
    big["objectId"] = "ZTF99bigalert"
    start = big["candidate"]["jd"] - 200.0
    big["prv_candidates"] = list(history_points(seeds, 15_000, start_id=800_000_000_000_000_000, start_jd=start))
    return container(big, seeds.schema), container(small, seeds.schema)


def _topics(bootstrap: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"rekey-{kind}-{suffix}" for kind in ("input", "classification", "novelty", "dead_letter", "rekeyed")}
    ensure_topics(bootstrap, {names["input"]: 1}, config={"max.message.bytes": str(INPUT_MAX)})
    ensure_topics(bootstrap, {names["dead_letter"]: 1})
    return names


def _run(bootstrap: str, names: dict[str, str], payloads: list[bytes]) -> dict[str, list]:
    config = make_config(kafka=kafka_section(bootstrap, names, f"rekey-{uuid.uuid4().hex[:6]}"),
                         rekey={"enabled": True, "topic": names["rekeyed"]})
    sink = KafkaSink(bootstrap, client={"message.max.bytes": str(INPUT_MAX)})
    for payload in payloads:
        sink.produce(names["input"], payload)
    sink.flush()
    rekeyer = Rekeyer(config)
    rekeyer.start()
    seen: dict[str, list] = {names["rekeyed"]: [], names["dead_letter"]: []}
    try:
        with KafkaSource(bootstrap, f"reader-{uuid.uuid4().hex[:6]}", list(seen)) as source:
            deadline = time.monotonic() + 60
            while sum(map(len, seen.values())) < len(payloads) and time.monotonic() < deadline:
                for message in source.consume(100, 1.0):
                    seen[message.topic].append(message)
    finally:
        rekeyer.stop()
    assert rekeyer.error is None, rekeyer.error
    return seen


def test_an_alert_too_large_for_the_rekeyed_topic_is_dead_lettered_and_the_stage_goes_on(kafka_bootstrap, alerts):
    big, small = alerts
    assert 1_000_000 < len(big) < INPUT_MAX
    names = _topics(kafka_bootstrap)
    ensure_topics(kafka_bootstrap, {names["rekeyed"]: 1})  # an operator's topic with the brokers' default limit
    try:
        seen = _run(kafka_bootstrap, names, [big, small])
    finally:
        delete_topics(kafka_bootstrap, list(names.values()))
    assert [len(m.value) for m in seen[names["rekeyed"]]] == [len(small)]
    (letter,) = seen[names["dead_letter"]]
    headers = dict(letter.headers)
    assert headers["reason"] == b"too_large" and headers["origin"].endswith(b"@0")


def test_the_rekeyed_topic_the_daemon_creates_takes_every_accepted_alert(kafka_bootstrap, alerts):
    big, small = alerts
    names = _topics(kafka_bootstrap)
    config = make_config(kafka=kafka_section(kafka_bootstrap, names, "rekey-create"), rekey={"enabled": True, "topic": names["rekeyed"]})
    try:
        ensure_output_topics(config, ClusterView(1, {names["input"]: 1}))
        assert topic_max_message_bytes(kafka_bootstrap, names["rekeyed"]) == REKEYED_MESSAGE_MAX_BYTES
        seen = _run(kafka_bootstrap, names, [big, small])
    finally:
        delete_topics(kafka_bootstrap, list(names.values()))
    assert sorted(len(m.value) for m in seen[names["rekeyed"]]) == sorted([len(big), len(small)])
    assert seen[names["dead_letter"]] == []
