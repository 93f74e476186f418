"""Re-keying: raw alerts re-partitioned by object id through an internal topic (as Kafka Streams does).

Surveys key their alert topics by nothing useful for us (ZTF: no key), so alerts of one
object are spread over every partition. For several daemons in one consumer group to each
own a disjoint set of objects, and therefore of light-curve state, the raw topic is first
copied into ``[rekey] topic`` keyed by object id (murmur2, Kafka's Java partitioner), and
the pipeline consumes that topic instead. Each daemon runs this stage in a thread, as a
member of its own group (``<group_id>-rekey``), in its own transactions
(``<transactional_id>-rekey``): copying is exactly-once too.

Bytes are forwarded unchanged (no re-encoding), with the original timestamp (so end-to-end
latency still counts from the survey's message) and headers. A message that does not
decode is forwarded without a key: the pipeline stage dead-letters it with the reason, so
there is one dead-letter path.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaException

from broker_filter.config import Config
from broker_filter.outputs import DeadLetter
from broker_filter.pipeline import decoder_from_config
from broker_filter.streams.alert import DecodeError
from broker_filter.streams.codec import MAX_PAYLOAD_BYTES, SchemaRegistryUnavailable
from broker_filter.streams.kafka_admin import topic_max_message_bytes
from broker_filter.streams.kafka import KafkaMessage, KafkaSink, KafkaSource, commit_batch

log = logging.getLogger(__name__)
KAFKA_LOG = logging.getLogger("librdkafka")

POLL_MESSAGES = 1000
POLL_TIMEOUT_S = 0.1
TXN_TIMEOUT_S = 60.0
#: The re-keyed topic takes every message the decoder accepts (its topic is created with this
#: max.message.bytes, its producer allowed as much); anything larger is dead-lettered.
REKEYED_MESSAGE_MAX_BYTES = MAX_PAYLOAD_BYTES + 1024
DEAD_LETTER_BYTES = 1_000_000 - 16_384  # librdkafka's default message.max.bytes, less the headers
DEFAULT_TOPIC_MAX_BYTES = 1_000_000  # when the topic's own limit cannot be read: the brokers' default, about 1 MB


class Rekeyer:
    """The re-keying stage; ``start()`` runs it in a thread, ``stop()`` commits and joins.

    ``error`` holds what stopped the thread, if anything (the daemon watches it and exits).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topic = config.rekey.topic
        self.exactly_once = config.kafka.delivery == "exactly_once"
        self.decoder = decoder_from_config(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rekey", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        kafka = self.config.kafka
        client = {**kafka.client, "logger": KAFKA_LOG}
        try:
            # held to what the re-keyed topic takes, so that an oversized message is refused here (a dead letter)
            limit = topic_max_message_bytes(kafka.bootstrap_servers, self.topic, client=kafka.client) or DEFAULT_TOPIC_MAX_BYTES
            sink = KafkaSink(
                kafka.bootstrap_servers,
                client={**client, "message.max.bytes": str(min(limit, REKEYED_MESSAGE_MAX_BYTES)), "partitioner": "murmur2_random"},
                transactional_id=f"{kafka.transactional_id}-rekey" if self.exactly_once else None,
                timeout=TXN_TIMEOUT_S,
            )
            with KafkaSource(kafka.bootstrap_servers, f"{kafka.group_id}-rekey", kafka.input_topics, client=client) as source:
                while not self._stop.is_set():
                    messages = source.consume(POLL_MESSAGES, POLL_TIMEOUT_S)
                    if messages:
                        self._forward(messages, source, sink)
        except BaseException as error:  # noqa: BLE001 — handed to the daemon's thread, which stops
            self.error = error
            log.exception("re-keying stage stopped")

    def _forward(self, messages: list[KafkaMessage], source: KafkaSource, sink: KafkaSink) -> None:
        """Copy one poll's messages and commit their offsets with them (or re-read them if aborted)."""
        offsets = {(m.topic, m.partition): m.offset + 1 for m in messages}
        try:
            keys = [self._key(message.value) for message in messages]
        except SchemaRegistryUnavailable as error:  # a valid alert whose schema is out of reach: copy it later, keyed
            log.warning("re-keying waits for the schema registry: %s", error)
            source.rewind(_first_offsets(messages))
            self._stop.wait(error.retry_in)
            return
        def produce() -> None:
            for message, key in zip(messages, keys):
                self._copy(sink, message, key)

        aborted = commit_batch(sink, source, offsets, produce, exactly_once=self.exactly_once)
        if aborted is not None:
            log.warning("re-keying batch aborted, re-reading: %s", aborted)
            source.rewind(_first_offsets(messages))

    def _copy(self, sink: KafkaSink, message: KafkaMessage, key: bytes | None) -> None:
        """Forward one message; one the re-keyed topic cannot take becomes a dead letter in the
        same transaction (never a stop: the stage would die on it at every restart)."""
        headers = list(message.headers) or None
        try:
            sink.produce(self.topic, message.value, key=key, headers=headers, timestamp_ms=message.timestamp_ms)
        except KafkaException as error:
            origin = f"{message.topic}[{message.partition}]@{message.offset}"
            letter = DeadLetter(origin, "too_large", f"cannot re-key: {error}", message.value).fitting(DEAD_LETTER_BYTES)
            log.warning("re-keying dead-letters %s: %s", origin, error)
            sink.produce(self.config.kafka.dead_letter_topic, letter.payload, key=origin, headers=letter.headers())

    def _key(self, payload: bytes) -> bytes | None:
        try:
            return self.decoder.decode(payload).object_id.encode()
        except DecodeError:
            return None


def _first_offsets(messages: list[KafkaMessage]) -> dict[tuple[str, int], int]:
    first: dict[tuple[str, int], int] = {}
    for message in messages:
        first.setdefault((message.topic, message.partition), message.offset)
    return first
