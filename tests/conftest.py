"""Shared fixtures: one real Apache Kafka broker per test session, and unique topics.

``kafka_bootstrap`` starts a single-node KRaft broker (broker_filter_proving.local_kafka.LocalKafka: jars
from Maven Central, cached outside the clone) the first time a test asks for it, or uses
``$KAFKA_BOOTSTRAP_SERVERS`` when set. Tests that use it are marked ``@pytest.mark.kafka``.
When a test failed, the broker's log file is named at the end of the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from broker_filter.streams.kafka_admin import delete_topics, ensure_topics
from broker_filter_proving.local_kafka import LocalKafka, ScramUser

SCRAM_USER = ScramUser(username="alice", password="alice-secret")


@pytest.fixture(scope="session")
def local_kafka() -> Iterator[LocalKafka | None]:
    """The broker this session started, or None when ``$KAFKA_BOOTSTRAP_SERVERS`` is used."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    with LocalKafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka | None, request: pytest.FixtureRequest) -> Iterator[str]:
    """``host:port`` of a running Kafka 4.x broker with transactions and consumer groups."""
    if local_kafka is None:
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    yield local_kafka.bootstrap
    if request.session.testsfailed:
        print(f"\nKafka broker log (tests failed): {local_kafka.log_file}\n{local_kafka.log_tail(20)}")


@pytest.fixture(scope="session")
def scram_kafka() -> Iterator[LocalKafka]:
    """A second local broker with a SASL_PLAINTEXT SCRAM-SHA-512 listener (user ``SCRAM_USER``).

    Always local (a shared cluster's credentials are unknown); tests may restart it.
    """
    with LocalKafka(scram=SCRAM_USER) as broker:
        yield broker


@pytest.fixture
def kafka_topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``create(partitions=1, prefix=None) -> name``: a fresh topic, deleted after the test.

    Names are unique per call, so tests never see each other's messages, even against a
    shared ``$KAFKA_BOOTSTRAP_SERVERS`` cluster.
    """
    created: list[str] = []

    def create(partitions: int = 1, prefix: str | None = None) -> str:
        base = prefix or request.node.name.split("[")[0]
        name = f"{base}-{uuid.uuid4().hex[:10]}"
        ensure_topics(kafka_bootstrap, {name: partitions})
        created.append(name)
        return name

    yield create
    delete_topics(kafka_bootstrap, created)
