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
from broker_filter.metrics import Metrics
from broker_filter.pipeline import decoder_from_config
from streams.alert import DecodeError
from streams.kafka_config import client_config

log = logging.getLogger(__name__)
KAFKA_LOG = logging.getLogger("librdkafka")

POLL_MESSAGES = 1000
POLL_TIMEOUT_S = 0.1
TXN_TIMEOUT_S = 60.0


class Rekeyer:
    """The re-keying stage; ``start()`` runs it in a thread, ``stop()`` commits and joins."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        from confluent_kafka import Consumer, Producer

        kafka = config.kafka
        self.topic = config.rekey.topic
        self.inputs = list(kafka.input_topics)
        self.exactly_once = kafka.delivery == "exactly_once"
        self.decoder = decoder_from_config(config)
        self.metrics = metrics
        self.consumer = Consumer(
            client_config(
                kafka.bootstrap_servers,
                kafka.client,
                **{
                    "group.id": f"{kafka.group_id}-rekey",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                },
            ),
            logger=KAFKA_LOG,
        )
        producer = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random"}
        if self.exactly_once:
            producer["transactional.id"] = f"{kafka.transactional_id}-rekey"
        self.producer = Producer(client_config(kafka.bootstrap_servers, kafka.client, **producer), logger=KAFKA_LOG)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rekey", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            if self.exactly_once:
                self.producer.init_transactions(TXN_TIMEOUT_S)
            self.consumer.subscribe(self.inputs)
            while not self._stop.is_set():
                messages = [m for m in self.consumer.consume(POLL_MESSAGES, POLL_TIMEOUT_S) if m.error() is None]
                if messages:
                    self._forward(messages)
        except BaseException as error:  # noqa: BLE001 — recorded for the main thread, then re-raised in the log
            self.error = error
            log.exception("re-keying stage stopped")
        finally:
            self.consumer.close()

    def _forward(self, messages: list) -> None:
        from confluent_kafka import TopicPartition

        if self.exactly_once:
            self.producer.begin_transaction()
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            payload = message.value() or b""
            self.producer.produce(
                self.topic, payload, self._key(payload), headers=message.headers(), timestamp=max(message.timestamp()[1], 0)
            )
            self.producer.poll(0)
            offsets[(message.topic(), message.partition())] = message.offset() + 1
        positions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if self.exactly_once:
            self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata(), TXN_TIMEOUT_S)
            self.producer.commit_transaction(TXN_TIMEOUT_S)
        else:
            self.producer.flush(TXN_TIMEOUT_S)
            self.consumer.commit(offsets=positions, asynchronous=False)

    def _key(self, payload: bytes) -> bytes | None:
        try:
            return self.decoder.decode(payload).object_id.encode()
        except DecodeError:
            return None
