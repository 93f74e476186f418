"""The local Kafka broker: start, stop, restart (clean and crash), SCRAM, and the Kafka
features the daemon relies on (consumer groups, transactions, read_committed), exercised
with bare confluent-kafka clients so that a failure here points at the broker, not at us."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from broker_filter.streams.kafka_admin import ensure_topics
from broker_filter_proving.local_kafka import LocalKafka, LocalKafkaError, cache_dir, provision

pytestmark = pytest.mark.kafka


def _consumer(bootstrap: str, group: str | None = None, **extra) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )


def _drain(consumer: Consumer, expected: int, timeout: float = 20.0) -> list:
    messages, deadline = [], time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.5):
            if message.error() is None:
                messages.append(message)
    return messages


def _produce(bootstrap: str, topic: str, values: list[bytes], **extra) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, **extra})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(20) == 0


def test_the_session_broker_lists_itself_in_metadata(kafka_bootstrap: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert metadata.brokers, "a ready broker appears in its own metadata"


def test_the_jars_are_cached_outside_the_clone() -> None:
    started = time.monotonic()
    jars = provision()
    assert time.monotonic() - started < 5, "a second provision() reads the cache, it downloads nothing"
    assert any(j.name.startswith("kafka_2.13-") for j in jars)
    assert all(j.is_relative_to(cache_dir()) for j in jars)


def test_restart_keeps_data_on_the_same_port(scram_kafka: LocalKafka) -> None:
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    ensure_topics(scram_kafka.bootstrap, {topic: 1})
    _produce(scram_kafka.bootstrap, topic, [b"before-clean-restart"])
    port = scram_kafka.port

    scram_kafka.restart()
    _produce(scram_kafka.bootstrap, topic, [b"before-crash"], **{"acks": "all"})
    scram_kafka.restart(kill=True)

    assert scram_kafka.port == port and scram_kafka.is_running()
    consumer = _consumer(scram_kafka.bootstrap)
    consumer.subscribe([topic])
    values = [m.value() for m in _drain(consumer, 2)]
    consumer.close()
    assert values == [b"before-clean-restart", b"before-crash"]


def test_stop_ends_the_broker_process(tmp_path) -> None:
    broker = LocalKafka(workdir=tmp_path / "broker").start()
    process_id = broker.pid
    broker.stop()
    assert not broker.is_running()
    with pytest.raises(ProcessLookupError):
        os.kill(process_id, 0)
    assert (tmp_path / "broker" / "server.log").is_file(), "the log stays for inspection"


def test_a_taken_port_fails_with_the_broker_log(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = LocalKafka(workdir=tmp_path / "broker", port=taken.getsockname()[1])
        with pytest.raises(LocalKafkaError, match="exited"):
            broker.start()
    assert not broker.is_running()


def test_scram_listener_accepts_the_user_and_refuses_a_wrong_password(scram_kafka: LocalKafka) -> None:
    def admin(password: str) -> AdminClient:
        return AdminClient(
            {
                "bootstrap.servers": scram_kafka.sasl_bootstrap,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": scram_kafka.scram.username,
                "sasl.password": password,
            }
        )

    assert admin(scram_kafka.scram.password).list_topics(timeout=10).brokers
    with pytest.raises(KafkaException) as refused:
        admin("wrong").list_topics(timeout=5)
    assert refused.value.args[0].code() in (KafkaError._AUTHENTICATION, KafkaError._TRANSPORT, KafkaError._TIMED_OUT)


def test_read_committed_sees_committed_and_not_aborted_transactions(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(20)
    for outcome in ("aborted", "committed"):
        producer.begin_transaction()
        producer.produce(topic, outcome.encode())
        producer.flush(10)
        (producer.abort_transaction if outcome == "aborted" else producer.commit_transaction)(20)

    committed_reader = _consumer(kafka_bootstrap, **{"isolation.level": "read_committed"})
    committed_reader.subscribe([topic])
    assert [m.value() for m in _drain(committed_reader, 1)] == [b"committed"]
    assert _drain(committed_reader, 1, timeout=2) == [], "the aborted message never shows"
    committed_reader.close()

    uncommitted_reader = _consumer(kafka_bootstrap, **{"isolation.level": "read_uncommitted"})
    uncommitted_reader.subscribe([topic])
    assert [m.value() for m in _drain(uncommitted_reader, 2)] == [b"aborted", b"committed"]
    uncommitted_reader.close()


def test_two_consumers_of_one_group_split_the_partitions(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=4)
    group = f"split-{uuid.uuid4().hex[:8]}"
    consumers = [_consumer(kafka_bootstrap, group) for _ in range(2)]
    for consumer in consumers:
        consumer.subscribe([topic])

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for consumer in consumers:
            consumer.poll(0.2)
        assignments = [{tp.partition for tp in c.assignment()} for c in consumers]
        if all(assignments) and sum(map(len, assignments)) == 4:
            break
    for consumer in consumers:
        consumer.close()
    assert assignments[0].isdisjoint(assignments[1])
    assert assignments[0] | assignments[1] == {0, 1, 2, 3}
    assert all(len(a) == 2 for a in assignments)


def test_committed_offsets_resume_a_group(kafka_bootstrap, kafka_topic_factory) -> None:
    topic = kafka_topic_factory(partitions=1)
    group = f"resume-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, [b"a", b"b", b"c"])

    first = _consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    taken = _drain(first, 2)[:2]
    first.commit(offsets=[TopicPartition(topic, 0, taken[-1].offset() + 1)], asynchronous=False)
    first.close()

    second = _consumer(kafka_bootstrap, group)
    second.subscribe([topic])
    assert [m.value() for m in _drain(second, 1)] == [b"c"]
    second.close()
