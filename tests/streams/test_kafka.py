"""Our Kafka source and sink against the real broker: round trips, transactions (commit,
abort, fencing), read_committed, surfaced delivery failures, pause/resume, lag,
rebalance hooks, SCRAM through passed-through properties, and the real sample alerts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from broker_filter.streams.kafka import (
    DeliveryError,
    FatalProducerError,
    KafkaMessage,
    KafkaSink,
    KafkaSource,
    TransactionAbortedError,
    ensure_topics,
    offsets_after,
)
from broker_filter_proving.local_kafka import LocalKafka

ALERTS = Path(__file__).resolve().parents[2] / "data" / "alerts"


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def _read(source: KafkaSource, expected: int, timeout: float = 20.0) -> list[KafkaMessage]:
    messages: list[KafkaMessage] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        messages += source.consume(500, timeout=0.5)
    return messages


def _fill(bootstrap: str, topic: str, count: int, **produce_kwargs) -> None:
    with KafkaSink(bootstrap) as sink:
        for i in range(count):
            sink.produce(topic, f"m{i}".encode(), key=f"k{i}", **produce_kwargs)


@pytest.mark.kafka
def test_sink_to_source_round_trip_keeps_value_key_headers_and_order(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=3)
    with KafkaSink(kafka_bootstrap) as sink:
        for i in range(60):
            sink.produce(topic, f"value-{i}".encode(), key=f"object-{i % 7}", headers=[("survey", b"ztf")])
    assert sink.counts.delivered == 60 and sink.counts.failed == 0

    with KafkaSource(kafka_bootstrap, _group(), [topic]) as source:
        messages = _read(source, 60)
    assert sorted(m.value for m in messages) == sorted(f"value-{i}".encode() for i in range(60))
    assert all(m.headers == (("survey", b"ztf"),) and m.timestamp_ms for m in messages)
    by_key: dict[bytes, set[int]] = {}
    for m in messages:
        by_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values()), "one key, one partition"
    for partition in {m.partition for m in messages}:
        offsets = [m.offset for m in messages if m.partition == partition]
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    assert offsets_after(messages) == {(topic, p): len([m for m in messages if m.partition == p]) for p in range(3)}


@pytest.mark.kafka
def test_committed_transaction_publishes_outputs_and_input_offsets_together(kafka_bootstrap, kafka_topic_factory) -> None:
    inputs, outputs = kafka_topic_factory(partitions=2), kafka_topic_factory(partitions=1)
    _fill(kafka_bootstrap, inputs, 10)
    group = _group()
    source = KafkaSource(kafka_bootstrap, group, [inputs])
    sink = KafkaSink(kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}")
    batch = _read(source, 10)

    sink.begin()
    for message in batch:
        sink.produce(outputs, message.value.upper(), key=message.key)
    sink.send_offsets(offsets_after(batch), source.group_metadata())
    sink.commit()

    assert source.committed(offsets_after(batch)) == offsets_after(batch)
    source.close()
    with KafkaSource(kafka_bootstrap, _group(), [outputs]) as reader:
        assert sorted(m.value for m in _read(reader, 10)) == sorted(f"M{i}".encode() for i in range(10))


@pytest.mark.kafka
def test_aborted_transaction_hides_outputs_and_keeps_input_offsets(kafka_bootstrap, kafka_topic_factory) -> None:
    inputs, outputs = kafka_topic_factory(), kafka_topic_factory()
    _fill(kafka_bootstrap, inputs, 5)
    source = KafkaSource(kafka_bootstrap, _group(), [inputs])
    sink = KafkaSink(kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}")
    batch = _read(source, 5)

    sink.begin()
    sink.produce(outputs, b"never-visible")
    sink.flush()  # written to the log, so that only the abort marker hides it
    sink.send_offsets(offsets_after(batch), source.group_metadata())
    sink.abort()
    sink.begin()
    sink.produce(outputs, b"visible")
    sink.commit()

    assert source.committed([(inputs, 0)]) == {(inputs, 0): -1001}, "no offset was committed"
    source.close()
    with KafkaSource(kafka_bootstrap, _group(), [outputs]) as committed_reader:
        assert [m.value for m in _read(committed_reader, 2, timeout=3)] == [b"visible"]
    with KafkaSource(kafka_bootstrap, _group(), [outputs], isolation="read_uncommitted") as raw_reader:
        assert [m.value for m in _read(raw_reader, 2)] == [b"never-visible", b"visible"]


@pytest.mark.kafka
def test_messages_dropped_by_an_abort_are_not_delivery_failures(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory()
    sink = KafkaSink(kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}", linger_ms=1000)
    sink.begin()
    sink.produce(topic, b"still queued when aborted")
    sink.abort()
    sink.begin()
    sink.produce(topic, b"kept")
    sink.commit()
    assert (sink.counts.delivered, sink.counts.failed) == (1, 0)


@pytest.mark.kafka
def test_a_rejected_message_is_counted_and_raised_not_swallowed(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory()
    # The client allows 3 MB, the broker's default limit is 1 MB: the broker rejects it.
    sink = KafkaSink(kafka_bootstrap, client={"message.max.bytes": 3_000_000})
    sink.produce(topic, b"x" * 2_000_000, key="too-big")
    sink.produce(topic, b"fine")
    with pytest.raises(DeliveryError) as raised:
        sink.flush()
    assert raised.value.count == 1 and raised.value.failures[0].key == b"too-big"
    assert (sink.counts.delivered, sink.counts.failed) == (1, 1)


@pytest.mark.kafka
def test_a_transaction_with_a_failed_delivery_is_aborted(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory()
    sink = KafkaSink(kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}", client={"message.max.bytes": 3_000_000})
    sink.begin()
    sink.produce(topic, b"small")
    sink.produce(topic, b"x" * 2_000_000)
    with pytest.raises(TransactionAbortedError):
        sink.commit()
    with KafkaSource(kafka_bootstrap, _group(), [topic]) as reader:
        assert _read(reader, 1, timeout=3) == []


@pytest.mark.kafka
def test_a_second_instance_with_the_same_transactional_id_fences_the_first(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory()
    transactional_id = f"tx-{uuid.uuid4().hex}"
    old = KafkaSink(kafka_bootstrap, transactional_id=transactional_id)
    old.begin()
    old.produce(topic, b"zombie")
    KafkaSink(kafka_bootstrap, transactional_id=transactional_id)  # the restarted daemon
    with pytest.raises(FatalProducerError):
        old.commit()


@pytest.mark.kafka
def test_pause_stops_fetching_and_resume_continues(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=2)
    _fill(kafka_bootstrap, topic, 4)
    with KafkaSource(kafka_bootstrap, _group(), [topic]) as source:
        assert len(_read(source, 4)) == 4
        source.pause()
        assert source.paused == {(topic, 0), (topic, 1)}
        _fill(kafka_bootstrap, topic, 6)
        assert _read(source, 1, timeout=3) == []
        source.resume()
        assert not source.paused
        assert len(_read(source, 6)) == 6


@pytest.mark.kafka
def test_backpressure_pause_survives_a_rebalance(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=2)
    group = _group()
    with KafkaSource(kafka_bootstrap, group, [topic]) as source:
        deadline = time.monotonic() + 20
        while len(source.assignment()) < 2 and time.monotonic() < deadline:
            source.consume(1, timeout=0.2)
        source.pause()
        with KafkaSource(kafka_bootstrap, group, [topic]) as newcomer:  # joins, then leaves: two rebalances
            while not newcomer.assignment() and time.monotonic() < deadline:
                source.consume(1, timeout=0.1)
                newcomer.consume(1, timeout=0.1)
        _fill(kafka_bootstrap, topic, 4)
        while len(source.assignment()) < 2 and time.monotonic() < deadline:
            source.consume(1, timeout=0.2)
        assert source.paused == {(topic, 0), (topic, 1)}
        assert _read(source, 1, timeout=2) == [], "partitions re-assigned while paused stay paused"
        source.resume()
        assert len(_read(source, 4)) == 4


@pytest.mark.kafka
def test_lag_counts_unread_messages_per_partition(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory()
    _fill(kafka_bootstrap, topic, 10)
    with KafkaSource(kafka_bootstrap, _group(), [topic]) as source:
        taken: list[KafkaMessage] = []
        deadline = time.monotonic() + 20
        while not taken and time.monotonic() < deadline:
            taken = source.consume(3, timeout=0.5)
        assert len(taken) == 3
        assert source.lag() == {(topic, 0): 7}


@pytest.mark.kafka
def test_rebalance_hooks_see_partitions_move_to_a_new_member(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=2)
    group, events = _group(), []
    first = KafkaSource(kafka_bootstrap, group, [topic], on_assign=lambda p: events.append(("assign", sorted(p))),
                        on_revoke=lambda p: events.append(("revoke", sorted(p))))
    deadline = time.monotonic() + 20
    while len(first.assignment()) < 2 and time.monotonic() < deadline:
        first.consume(1, timeout=0.2)
    second = KafkaSource(kafka_bootstrap, group, [topic])
    while len(second.assignment()) < 1 and time.monotonic() < deadline:
        first.consume(1, timeout=0.1)
        second.consume(1, timeout=0.1)
    second.close()
    first.close()
    assert events[0] == ("assign", [(topic, 0), (topic, 1)])
    assert ("revoke", [(topic, 0), (topic, 1)]) in events


@pytest.mark.kafka
def test_messages_over_the_size_limit_are_flagged(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory()
    with KafkaSink(kafka_bootstrap) as sink:
        sink.produce(topic, b"x" * 100)
        sink.produce(topic, b"x" * 10)
    with KafkaSource(kafka_bootstrap, _group(), [topic], max_message_bytes=50) as source:
        assert [m.too_large for m in _read(source, 2)] == [True, False]


@pytest.mark.kafka
def test_scram_credentials_pass_through_with_the_password_from_a_file(scram_kafka: LocalKafka, tmp_path) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(scram_kafka.scram.password + "\n")
    client = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": scram_kafka.scram.username,
        "sasl.password.file": str(password_file),
    }
    topic = f"scram-{uuid.uuid4().hex[:8]}"
    ensure_topics(scram_kafka.sasl_bootstrap, {topic: 1}, client=client)
    with KafkaSink(scram_kafka.sasl_bootstrap, client=client) as sink:
        sink.produce(topic, b"authenticated")
    with KafkaSource(scram_kafka.sasl_bootstrap, _group(), [topic], client=client) as source:
        assert [m.value for m in _read(source, 1)] == [b"authenticated"]


@pytest.mark.kafka
@pytest.mark.skipif(not ALERTS.is_dir(), reason="data/alerts (the committed sample alerts) is not in this checkout")
def test_real_sample_alerts_survive_the_broker(kafka_bootstrap, kafka_topic_factory) -> None:
    from broker_filter.streams.archive import iter_archive
    from broker_filter.streams.codec import AlertDecoder

    items = [item for item in iter_archive([ALERTS], order="file") if item.alert is not None]
    assert len(items) >= 20
    topic = kafka_topic_factory(partitions=2)
    with KafkaSink(kafka_bootstrap) as sink:
        for item in items:
            sink.produce(topic, item.payload, key=item.alert.object_id)
    with KafkaSource(kafka_bootstrap, _group(), [topic]) as source:
        messages = _read(source, len(items))

    decoder = AlertDecoder()
    received = sorted((decoder.decode(m.value) for m in messages), key=lambda a: (a.object_id, a.alert_id))
    expected = sorted((item.alert for item in items), key=lambda a: (a.object_id, a.alert_id))
    assert received == expected
    assert all(m.key == decoder.decode(m.value).object_id.encode() for m in messages)


class _FlushFails:
    """A producer whose flush meets a transactional error (as librdkafka reports a fencing found while adding partitions)."""

    def __init__(self, fatal: bool) -> None:
        from confluent_kafka import KafkaError

        self.error = KafkaError(KafkaError._FENCED if fatal else KafkaError._TIMED_OUT, "while adding partitions", fatal=fatal)
        self.aborted = False

    def flush(self, timeout: float) -> int:
        from confluent_kafka import KafkaException

        raise KafkaException(self.error)

    def abort_transaction(self, timeout: float) -> None:
        self.aborted = True


@pytest.mark.parametrize("fatal", [True, False])
def test_an_error_met_while_flushing_the_transaction_maps_to_our_types(fatal: bool) -> None:
    sink = KafkaSink("127.0.0.1:1")  # not transactional: no broker is contacted here
    sink._producer = producer = _FlushFails(fatal)
    with pytest.raises(FatalProducerError if fatal else TransactionAbortedError):
        sink.commit()
    assert producer.aborted is not fatal
