"""Topic administration: the few admin calls the daemon, the CLI and the tests need.

``ensure_topics`` returns only once every partition has a leader, because a producer or a
consumer started right after ``create_topics`` otherwise races the controller and sees
"unknown topic or partition".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from broker_filter.streams.kafka_config import client_config

DEFAULT_TIMEOUT_S = 30.0


class TopicError(RuntimeError):
    """A topic could not be created, found or deleted; the message names the topic."""


def _admin(bootstrap: str, client: Mapping[str, Any] | None):
    from confluent_kafka.admin import AdminClient

    return AdminClient(client_config(bootstrap, client))


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    client: Mapping[str, Any] | None = None,
    replication_factor: int = -1,
    config: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, int]:
    """Create the missing ``{topic: partitions}`` and wait until all have leaders.

    A topic that already exists is kept as it is (its partition count is returned, never
    changed: repartitioning a live topic would move keys between partitions).
    ``replication_factor=-1`` takes the broker's default. Returns ``{topic: partitions}``.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    admin = _admin(bootstrap, client)
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=replication_factor, config=dict(config or {}))
        for name, n in topics.items()
        if name not in existing
    ]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process won the race
                    raise TopicError(f"cannot create topic {name!r}: {exc.args[0].str()}") from exc
    return _await_leaders(admin, list(topics), timeout)


def _await_leaders(admin: Any, names: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout).topics
        ready = {
            name: len(metadata[name].partitions)
            for name in names
            if name in metadata
            and metadata[name].error is None
            and metadata[name].partitions
            and all(p.leader >= 0 for p in metadata[name].partitions.values())
        }
        if len(ready) == len(names):
            return ready
        if time.monotonic() > deadline:
            raise TopicError(f"topics without a leader after {timeout:.0f} s: {sorted(set(names) - set(ready))}")
        time.sleep(0.1)


def delete_topics(
    bootstrap: str, names: Iterable[str], *, client: Mapping[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Delete topics; a topic that is already gone is not an error."""
    from confluent_kafka import KafkaException

    names = list(names)
    if not names:
        return
    admin = _admin(bootstrap, client)  # must outlive the futures: its destruction cancels them
    for name, future in admin.delete_topics(names, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise TopicError(f"cannot delete topic {name!r}: {exc.args[0].str()}") from exc


def topic_max_message_bytes(bootstrap: str, topic: str, *, client: Mapping[str, Any] | None = None,
                            timeout: float = DEFAULT_TIMEOUT_S) -> int | None:
    """The topic's ``max.message.bytes`` (the largest message its brokers accept), None if it cannot be read.

    A producer held to this limit refuses an oversized message itself, where it can be
    dead-lettered; the broker would refuse it only at delivery, aborting the transaction that
    carried it at every retry.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = _admin(bootstrap, client)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
        return int(entries["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError, TypeError):
        return None
