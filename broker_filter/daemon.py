"""The Kafka driver: consume, run the pipeline, produce, commit — exactly once by default.

Lifecycle of one micro-batch (the unit of commit)::

    poll ─► Pipeline.accept (decode, merge state, decide) ─► MicroBatcher (size or age)
         ─► inference thread: Pipeline.score ─► main thread, batches in order:
            1. Pipeline.complete            records in input order
            2. begin_transaction            (exactly_once)
            3. produce records              classification, novelty, dead-letter topics
            4. LightCurveStore.flush        state durable on disk (SQLite commit)
            5. send_offsets_to_transaction  the batch's input offsets, with the group's metadata
            6. commit_transaction           outputs and offsets become visible together

Why this order: state is saved (4) before the offsets are committed (6), so committed
offsets never run ahead of the saved light curves. A crash between 4 and 6 aborts the
transaction: its outputs are never visible to ``read_committed`` consumers, the alerts are
consumed again, merging them again changes nothing (idempotent by detection id), and each
record depends only on detections observed up to its alert (as-of views), so the records
produced the second time are the ones the first attempt would have committed.

``at_least_once`` (brokers without transactions): produce, wait for every delivery report,
flush state, then commit the offsets synchronously; a crash in between re-delivers records
that consumers de-duplicate by key (``record_id``).

Inference runs in one worker thread so that the poll loop keeps the consumer in its group
(``max.poll.interval.ms``) while the model works. When more than ``queue_max`` alerts wait
for the model, every assigned partition is paused (polling continues, fetching stops) and
resumed once the queue has drained below half. On a rebalance the batches in flight are
finished and committed before the partitions go, and the in-memory state is flushed and
dropped (objects are loaded again from the store when their alerts come). SIGTERM / SIGINT
finish the batch in flight, commit, and return 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from broker_filter.batching import MicroBatch, MicroBatcher
from broker_filter.config import Config
from broker_filter.inference import InferenceResult
from broker_filter.metrics import Metrics
from broker_filter.outputs import DeadLetter, Output, encode
from broker_filter.pipeline import Pipeline, Slot
from broker_filter.rekey import Rekeyer
from streams.kafka_config import client_config, redact

log = logging.getLogger(__name__)
KAFKA_LOG = logging.getLogger("librdkafka")

POLL_TIMEOUT_S = 0.1
POLL_MESSAGES = 500
TXN_TIMEOUT_S = 60.0
LAG_EVERY_S = 5.0
STOP_GRACE_S = 30.0  # how long a stopping daemon keeps retrying a commit against unreachable brokers
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes default
HEADROOM_BYTES = 16_384  # record overhead, key and headers of a dead letter


class DaemonError(RuntimeError):
    """The daemon cannot go on (fenced by another instance, a fatal Kafka error)."""


@dataclass
class _InFlight:
    """A closed batch: its input offsets (next offset to read, per partition) and its inference."""

    batch: MicroBatch[Slot]
    offsets: dict[tuple[str, int], int]
    future: Future[InferenceResult]
    timestamps_ms: list[int] = field(default_factory=list)


class Daemon:
    """One consumer-group member running the pipeline; :meth:`run` returns an exit status."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        metrics: Metrics,
        input_topics: tuple[str, ...] | None = None,
        upstream: Rekeyer | None = None,
    ) -> None:
        """``input_topics`` default to the config's; ``upstream`` is the re-keying stage feeding them (watched)."""
        from confluent_kafka import Consumer, Producer

        self.config = config
        self.pipeline = pipeline
        self.metrics = metrics
        self.input_topics = input_topics or config.kafka.input_topics
        self.upstream = upstream
        kafka = config.kafka
        self.exactly_once = kafka.delivery == "exactly_once"
        self.topics = {
            "classification": kafka.classification_topic,
            "novelty": kafka.novelty_topic,
            "dead_letter": kafka.dead_letter_topic,
        }
        consumer_props = client_config(
            kafka.bootstrap_servers,
            kafka.client,
            **{
                "group.id": kafka.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            },
        )
        producer_props = client_config(
            kafka.bootstrap_servers, kafka.client, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )
        if self.exactly_once:
            producer_props["transactional.id"] = kafka.transactional_id
        self.max_dead_letter_bytes = int(producer_props.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)) - HEADROOM_BYTES
        log.info("consumer %s", redact(consumer_props))
        # librdkafka's own lines (connection retries...) go through logging, hence [logging] format
        self.consumer = Consumer(consumer_props, logger=KAFKA_LOG)
        self.producer = Producer(producer_props, logger=KAFKA_LOG)
        self.batcher: MicroBatcher[Slot] = MicroBatcher(
            config.inference.max_batch, config.inference.max_wait_ms, config.inference.queue_max
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.stop_requested = threading.Event()
        self._in_flight: deque[_InFlight] = deque()
        self._open_offsets: dict[tuple[str, int], int] = {}
        self._open_timestamps: list[int] = []
        self._assigned: list = []
        self._paused = False
        self._delivery_failures = 0
        self._lag_at = 0.0

    # -- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask for a clean stop (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_requested.set())

    def run(self) -> int:
        if self.exactly_once:
            from confluent_kafka import KafkaException

            try:
                self.producer.init_transactions(TXN_TIMEOUT_S)
            except KafkaException as error:
                raise DaemonError(
                    f"cannot initialise transactions ({error.args[0].str()}); "
                    'brokers without transactions need delivery = "at_least_once"'
                ) from error
        self.consumer.subscribe(
            list(self.input_topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "consuming %s as group %s (%s)", ",".join(self.input_topics), self.config.kafka.group_id, self.config.kafka.delivery
        )
        try:
            while not self.stop_requested.is_set():
                self._step()
            self._drain()
        finally:
            self.executor.shutdown(wait=True)
            self.consumer.close()
            self.pipeline.store.close()
        log.info("stopped cleanly")
        return 0

    def _step(self) -> None:
        if self.upstream is not None and self.upstream.error is not None:
            raise DaemonError(f"the re-keying stage failed: {self.upstream.error}")
        self._commit_ready(block=False)
        self._apply_backpressure()
        for message in self.consumer.consume(POLL_MESSAGES, POLL_TIMEOUT_S):
            self._handle(message)
        batch = self.batcher.due()
        if batch is not None:
            self._submit(batch)
        self._update_lag()

    def _handle(self, message) -> None:
        from confluent_kafka import KafkaError

        error = message.error()
        if error is not None:
            if error.fatal():
                raise DaemonError(f"fatal consumer error: {error.str()}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error.str())
            return
        self.metrics.alerts_consumed.inc()
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        kind, timestamp_ms = message.timestamp()
        timestamp_ms = timestamp_ms if kind != 0 and timestamp_ms >= 0 else None
        origin = f"{topic}[{partition}]@{offset}"
        slot = self.pipeline.accept(message.value() or b"", origin, timestamp_ms)
        self._open_offsets[(topic, partition)] = offset + 1
        if timestamp_ms is not None:
            self._open_timestamps.append(timestamp_ms)
        batch = self.batcher.add(slot, slot.needs_scoring)
        if batch is not None:
            self._submit(batch)

    def _submit(self, batch: MicroBatch[Slot]) -> None:
        future = self.executor.submit(self.pipeline.score, batch)
        self._in_flight.append(_InFlight(batch, self._open_offsets, future, self._open_timestamps))
        self._open_offsets, self._open_timestamps = {}, []

    def _drain(self) -> None:
        """Close the open batch and commit everything in flight (shutdown, revocation)."""
        batch = self.batcher.take()
        if batch is not None:
            self._submit(batch)
        self._commit_ready(block=True)

    # -- commit ----------------------------------------------------------------------

    def _commit_ready(self, block: bool) -> None:
        while self._in_flight and (block or self._in_flight[0].future.done()):
            flight = self._in_flight[0]
            outputs = self.pipeline.complete(flight.batch, flight.future.result())
            if self._commit(outputs, flight.offsets):
                self._in_flight.popleft()
                self._observe_latency(flight.timestamps_ms)
            else:
                self._rewind()
                return

    def _commit(self, outputs: list[Output], offsets: dict[tuple[str, int], int]) -> bool:
        """Produce and commit one batch; False if it was aborted (the caller re-reads its input)."""
        from confluent_kafka import KafkaException, TopicPartition

        positions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if self.exactly_once:
                self.producer.begin_transaction()
                self._produce(outputs)
                self.pipeline.store.flush()
                if positions:
                    metadata = self.consumer.consumer_group_metadata()
                    self._retrying(
                        "send offsets", lambda: self.producer.send_offsets_to_transaction(positions, metadata, TXN_TIMEOUT_S)
                    )
                self._retrying("commit", lambda: self.producer.commit_transaction(TXN_TIMEOUT_S))
            else:
                self._produce(outputs)
                remaining = self.producer.flush(TXN_TIMEOUT_S)
                if remaining or self._delivery_failures:
                    raise DeliveryFailed(f"{remaining} undelivered, {self._delivery_failures} failed")
                self.pipeline.store.flush()
                if positions:
                    self._retrying("commit offsets", lambda: self.consumer.commit(offsets=positions, asynchronous=False))
        except (KafkaException, DeliveryFailed) as error:
            return self._recover(error)
        self.metrics.transactions.labels("committed").inc()
        self.metrics.last_output_timestamp.set(time.time())
        for output in outputs:
            self.metrics.outputs_produced.labels(self.topics[output.kind]).inc()
        return True

    def _produce(self, outputs: list[Output]) -> None:
        for output in outputs:
            value = output.value
            headers = None
            if isinstance(value, DeadLetter):
                value = value.fitting(self.max_dead_letter_bytes)
                headers = value.headers()
            payload = encode(output.kind, value)
            waiting_since = time.monotonic()
            while True:
                try:
                    self.producer.produce(
                        self.topics[output.kind], payload, output.key.encode(), headers=headers, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:  # local queue full (e.g. brokers unreachable): serve delivery reports, retry
                    if self.stop_requested.is_set() and time.monotonic() - waiting_since > STOP_GRACE_S:
                        raise DeliveryFailed("the producer queue stayed full while stopping") from None
                    self.producer.poll(0.1)
            self.producer.poll(0)

    def _on_delivery(self, error, message) -> None:
        if error is not None:
            self._delivery_failures += 1
            log.error("delivery to %s failed: %s", message.topic(), error.str())

    def _retrying(self, what: str, call):
        """``call()``, again after a back-off while Kafka says the error is retriable (a broker
        restarting, a coordinator moving); after a stop request, give up within STOP_GRACE_S."""
        from confluent_kafka import KafkaException

        started, attempt = time.monotonic(), 0
        while True:
            try:
                return call()
            except KafkaException as error:
                kafka_error = error.args[0]
                giving_up = self.stop_requested.is_set() and time.monotonic() - started > STOP_GRACE_S
                if not kafka_error.retriable() or kafka_error.txn_requires_abort() or giving_up:
                    raise
                attempt += 1
                log.warning("%s failed (%s), retrying", what, kafka_error.str())
                time.sleep(min(0.5 * 2**attempt, 10.0))

    def _recover(self, error) -> bool:
        """An aborted batch: abort the transaction (if any) and tell the caller to re-read."""
        from confluent_kafka import KafkaException

        kafka_error = error.args[0] if error.args and hasattr(error.args[0], "fatal") else None
        if kafka_error is not None and kafka_error.fatal():
            raise DaemonError(
                f"fatal producer error (another instance with this transactional_id?): {kafka_error.str()}"
            ) from error
        log.warning("batch aborted, its input will be read again: %s", error)
        if self.exactly_once:
            try:
                self._retrying("abort", lambda: self.producer.abort_transaction(TXN_TIMEOUT_S))
            except KafkaException as abort_error:
                raise DaemonError(f"cannot abort the transaction: {abort_error.args[0].str()}") from abort_error
        self.metrics.transactions.labels("aborted").inc()
        self._delivery_failures = 0
        return False

    def _forget_uncommitted(self) -> None:
        for flight in self._in_flight:
            flight.future.cancel()
        self._in_flight.clear()
        self.batcher.take()
        self._open_offsets, self._open_timestamps = {}, []

    def _rewind(self) -> None:
        """Forget everything not committed and seek back to the committed offsets."""
        self._forget_uncommitted()
        if self._assigned:
            from confluent_kafka import OFFSET_BEGINNING

            for tp in self._retrying("read committed offsets", lambda: self.consumer.committed(self._assigned, TXN_TIMEOUT_S)):
                if tp.offset < 0:  # nothing committed yet: start over, as auto.offset.reset says
                    tp.offset = OFFSET_BEGINNING
                self.consumer.seek(tp)

    def _observe_latency(self, timestamps_ms: list[int]) -> None:
        now_ms = time.time() * 1000.0
        for timestamp_ms in timestamps_ms:
            self.metrics.end_to_end_latency.observe(max(0.0, (now_ms - timestamp_ms) / 1000.0))

    # -- flow control and rebalancing ------------------------------------------------

    def _queue_depth(self) -> int:
        return self.batcher.pending + sum(len(f.batch) for f in self._in_flight)

    def _apply_backpressure(self) -> None:
        depth = self._queue_depth()
        self.metrics.inference_queue_depth.set(depth)
        if not self._paused and depth >= self.config.inference.queue_max and self._assigned:
            self.consumer.pause(self._assigned)
            self._paused = True
            self.metrics.partitions_paused.set(len(self._assigned))
            log.debug("paused %d partitions at queue depth %d", len(self._assigned), depth)
        elif self._paused and depth < self.config.inference.queue_max // 2:
            self.consumer.resume(self._assigned)
            self._paused = False
            self.metrics.partitions_paused.set(0)

    def _on_assign(self, consumer, partitions) -> None:
        self._assigned = list(partitions)
        self._paused = False
        self.metrics.partitions_paused.set(0)
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        log.info("revoking %d partitions: committing work in flight", len(partitions))
        self._drain()
        self.pipeline.store.release_all()
        self._assigned = []

    def _on_lost(self, consumer, partitions) -> None:
        log.warning("lost %d partitions: uncommitted work is dropped and will be redone by their new owner", len(partitions))
        self._forget_uncommitted()
        self.pipeline.store.release_all()
        self._assigned = []

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S or not self._assigned:
            return
        self._lag_at = now
        for tp in self.consumer.position(self._assigned):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))


class DeliveryFailed(RuntimeError):
    """At-least-once mode: some records were not acknowledged by the brokers."""
