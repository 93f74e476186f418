"""Start-up checks shared by ``run`` and ``check``: the brokers answer, the input topics exist.

Each failure is a :class:`PreflightError` whose message is the one line printed before a
non-zero exit: an operator should see "cannot reach Kafka at host:port" rather than a
stream of librdkafka retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_filter.config import Config
from broker_filter.streams.kafka_config import KafkaConfigError, client_config

REACH_TIMEOUT_S = 10.0


class PreflightError(RuntimeError):
    """A reason the daemon cannot start; the message is one line."""


@dataclass(frozen=True)
class ClusterView:
    """What the brokers told us: broker count and the partitions of every topic we read."""

    brokers: int
    input_partitions: dict[str, int]


def reach_brokers(config: Config, timeout: float = REACH_TIMEOUT_S) -> ClusterView:
    """Ask the cluster for its metadata (this also exercises SASL/TLS settings) and find the inputs."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    kafka = config.kafka
    try:
        # log_level 0: librdkafka's connection-retry lines would bury the one line that matters
        probe = {"socket.timeout.ms": int(timeout * 1000), "log_level": 0}
        admin = AdminClient(client_config(kafka.bootstrap_servers, kafka.client, **probe))
        metadata = admin.list_topics(timeout=timeout)
    except KafkaConfigError as error:
        raise PreflightError(f"[kafka] client: {error}") from error
    except (KafkaException, ValueError) as error:
        detail = error.args[0].str() if error.args and hasattr(error.args[0], "str") else str(error)
        raise PreflightError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {detail}") from error
    if not metadata.brokers:
        raise PreflightError(f"cannot reach Kafka at {kafka.bootstrap_servers}: no broker listed")
    missing = [t for t in kafka.input_topics if t not in metadata.topics]
    if missing:
        raise PreflightError(f"input topic(s) {missing} do not exist on {kafka.bootstrap_servers}")
    partitions = {t: len(metadata.topics[t].partitions) for t in kafka.input_topics}
    return ClusterView(len(metadata.brokers), partitions)


def ensure_output_topics(config: Config, view: ClusterView) -> None:
    """Create missing output topics (and the re-keying topic) with as many partitions as the inputs."""
    from broker_filter.streams.kafka_admin import TopicError, ensure_topics

    kafka = config.kafka
    partitions = max(view.input_partitions.values())
    topics = {kafka.classification_topic: partitions, kafka.novelty_topic: partitions, kafka.dead_letter_topic: partitions}
    try:
        ensure_topics(kafka.bootstrap_servers, topics, client=kafka.client)
        if config.rekey.enabled:  # it carries the raw alerts: as large as any the decoder accepts
            from broker_filter.rekey import REKEYED_MESSAGE_MAX_BYTES

            ensure_topics(kafka.bootstrap_servers, {config.rekey.topic: partitions}, client=kafka.client,
                          config={"max.message.bytes": str(REKEYED_MESSAGE_MAX_BYTES)})
    except (TopicError, RuntimeError) as error:
        raise PreflightError(str(error)) from error
