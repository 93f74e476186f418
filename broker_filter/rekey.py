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

from broker_filter.config import Config
from broker_filter.pipeline import decoder_from_config
from broker_filter.streams.alert import DecodeError
from broker_filter.streams.codec import SchemaRegistryUnavailable
from broker_filter.streams.kafka import KafkaMessage, KafkaSink, KafkaSource, TransactionAbortedError

log = logging.getLogger(__name__)
KAFKA_LOG = logging.getLogger("librdkafka")

POLL_MESSAGES = 1000
POLL_TIMEOUT_S = 0.1
TXN_TIMEOUT_S = 60.0


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
            sink = KafkaSink(
                kafka.bootstrap_servers,
                client={**client, "partitioner": "murmur2_random"},
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
        try:
            if self.exactly_once:
                sink.begin()
            for message, key in zip(messages, keys):
                headers = list(message.headers) or None
                sink.produce(self.topic, message.value, key=key, headers=headers, timestamp_ms=message.timestamp_ms)
            if self.exactly_once:
                sink.send_offsets(offsets, source.group_metadata())
                sink.commit()
            else:
                sink.flush()
                source.commit(offsets)
        except TransactionAbortedError as error:
            log.warning("re-keying transaction aborted, re-reading: %s", error)
            source.rewind(_first_offsets(messages))

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
