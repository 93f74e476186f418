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

The Kafka clients are :class:`broker_filter.streams.kafka.KafkaSource` and :class:`broker_filter.streams.kafka.KafkaSink`
(consumer group, pause/resume, lag; idempotent or transactional producer, delivery reports,
retries of retriable transactional errors); this module decides *when* to call them.

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

from confluent_kafka import OFFSET_BEGINNING, KafkaException

from broker_filter.batching import MicroBatch, MicroBatcher
from broker_filter.config import Config
from broker_filter.inference import InferenceResult
from broker_filter.metrics import Metrics
from broker_filter.outputs import OUTPUT_TOO_LARGE, Output, encode_all
from broker_filter.pipeline import Pipeline, Slot
from broker_filter.rekey import Rekeyer
from broker_filter.streams.codec import SchemaRegistryUnavailable
from broker_filter.streams.kafka import (
    FatalProducerError,
    KafkaMessage,
    KafkaSink,
    KafkaSource,
    KafkaSourceError,
    TopicPartitionKey,
    TransactionAbortedError,
    commit_batch,
)

log = logging.getLogger(__name__)
KAFKA_LOG = logging.getLogger("librdkafka")

POLL_TIMEOUT_S = 0.1
POLL_MESSAGES = 500
TXN_TIMEOUT_S = 20.0  # each transactional call; a call stuck past it (plus a grace) replaces the producer
LAG_EVERY_S = 5.0
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes default
HEADROOM_BYTES = 16_384  # record overhead, key and headers of a dead letter


class DaemonError(RuntimeError):
    """The daemon cannot go on (fenced by another instance, a fatal Kafka error)."""


@dataclass
class _InFlight:
    """A closed batch: its input offsets (next offset to read, per partition) and its inference."""

    batch: MicroBatch[Slot]
    offsets: dict[TopicPartitionKey, int]
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
        # librdkafka's own lines (connection retries...) go through logging, hence [logging] format
        self.client = {**kafka.client, "logger": KAFKA_LOG}
        # the brokers' own limit is unknown here; their default (~1 MB) is the safe assumption
        message_max = min(int(kafka.client.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)), DEFAULT_MESSAGE_MAX_BYTES)
        self.max_dead_letter_bytes = message_max - HEADROOM_BYTES
        self.batcher: MicroBatcher[Slot] = MicroBatcher(
            config.inference.max_batch, config.inference.max_wait_ms, config.inference.queue_max
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.stop_requested = threading.Event()
        self.source: KafkaSource | None = None
        self.sink: KafkaSink | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._open_offsets: dict[TopicPartitionKey, int] = {}
        self._open_timestamps: list[int] = []
        self._assigned: list[TopicPartitionKey] = []
        self._lag_at = 0.0
        self._throttled = False  # input paused by backpressure
        self._held: dict[TopicPartitionKey, float] = {}  # partitions waiting for the schema registry: when to retry (monotonic)

    # -- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask for a clean stop (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_requested.set())

    def run(self) -> int:
        kafka = self.config.kafka
        try:
            self.sink = KafkaSink(
                kafka.bootstrap_servers,
                client=self.client,
                transactional_id=kafka.transactional_id if self.exactly_once else None,
                timeout=TXN_TIMEOUT_S,
                interrupted=self.stop_requested.is_set,  # init_transactions waits for brokers still starting
            )
        except (FatalProducerError, KafkaException) as error:
            raise DaemonError(
                f"cannot start the producer ({error}); brokers without transactions need delivery = \"at_least_once\""
            ) from error
        self.source = KafkaSource(
            kafka.bootstrap_servers,
            kafka.group_id,
            self.input_topics,
            client=self.client,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("consuming %s as group %s (%s)", ",".join(self.input_topics), kafka.group_id, kafka.delivery)
        try:
            while not self.stop_requested.is_set():
                self._step()
            self._drain()
        except KafkaSourceError as error:
            self._forget_uncommitted()
            raise DaemonError(str(error)) from error
        except BaseException:
            self._forget_uncommitted()  # never committed, so read again by whoever owns the partitions next
            raise
        finally:
            self.source.close()  # leaves the group (revocation callback: nothing left to commit)
            self.executor.shutdown(wait=True)
            self.pipeline.store.close()
        log.info("stopped cleanly")
        return 0

    def _step(self) -> None:
        if self.upstream is not None and self.upstream.error is not None:
            raise DaemonError(f"the re-keying stage failed: {self.upstream.error}")
        self._commit_ready(block=False)
        self._release_held()
        self._apply_backpressure()
        for message in self.source.consume(POLL_MESSAGES, POLL_TIMEOUT_S):
            if (message.topic, message.partition) not in self._held:  # the rest of a held partition is read again later
                self._handle(message)
        batch = self.batcher.due()
        if batch is not None:
            self._submit(batch)
        self._update_lag()

    def _handle(self, message: KafkaMessage) -> None:
        origin = f"{message.topic}[{message.partition}]@{message.offset}"
        try:
            slot = self.pipeline.accept(message.value, origin, message.timestamp_ms)
        except SchemaRegistryUnavailable as error:
            self._hold(message, error)
            return
        self.metrics.alerts_consumed.inc()
        self._open_offsets[(message.topic, message.partition)] = message.offset + 1
        if message.timestamp_ms is not None:
            self._open_timestamps.append(message.timestamp_ms)
        batch = self.batcher.add(slot, slot.needs_scoring)
        if batch is not None:
            self._submit(batch)

    def _hold(self, message: KafkaMessage, error: SchemaRegistryUnavailable) -> None:
        """Wait for the schema registry instead of dead-lettering a valid alert.

        The message's partition is paused and sought back to it, so that it and everything
        after it are read again, in order, once the registry's back-off has passed; the other
        partitions (and the poll loop: no eviction from the group) go on.
        """
        tp = (message.topic, message.partition)
        if tp not in self._held:
            log.warning("%s[%d] paused at offset %d: %s", message.topic, message.partition, message.offset, error)
            self.metrics.schema_registry_waits.inc()
        self._held[tp] = time.monotonic() + error.retry_in
        self.source.pause([tp])
        self.source.rewind({tp: message.offset})

    def _release_held(self) -> None:
        now = time.monotonic()
        due = [tp for tp, retry_at in self._held.items() if retry_at <= now]
        for tp in due:
            del self._held[tp]
        if due and not self._throttled:
            self.source.resume(due)

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

    def _commit(self, outputs: list[Output], offsets: dict[TopicPartitionKey, int]) -> bool:
        """Produce and commit one batch; False if it was aborted (the caller re-reads its input)."""
        try:
            aborted = commit_batch(self.sink, self.source, offsets, lambda: self._produce(outputs),
                                   exactly_once=self.exactly_once, before_offsets=self.pipeline.store.flush)
        except FatalProducerError as error:
            raise DaemonError(f"{error} (another instance with this transactional_id?)") from error
        except (TransactionAbortedError, KafkaException) as error:
            raise DaemonError(f"cannot abort the transaction: {error}") from error
        if aborted is not None:
            log.warning("batch aborted, its input will be read again: %s", aborted)
            self.metrics.transactions.labels("aborted").inc()
            return False
        self.metrics.transactions.labels("committed").inc()
        self.metrics.last_output_timestamp.set(time.time())
        for output in outputs:
            self.metrics.outputs_produced.labels(self.topics[output.kind]).inc()
        return True

    def _produce(self, outputs: list[Output]) -> None:
        for item in encode_all(outputs, self.max_dead_letter_bytes):
            if item.kind == "dead_letter" and dict(item.headers or ()).get("reason") == OUTPUT_TOO_LARGE.encode():
                log.warning("an output record too large for the brokers was dead-lettered: %s", dict(item.headers)["detail"].decode())
                self.metrics.alerts_dead_lettered.labels(OUTPUT_TOO_LARGE).inc()
            self.sink.produce(self.topics[item.kind], item.value, key=item.key, headers=item.headers)

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
            committed = self._committed_offsets()
            # nothing committed yet (negative): start over, as auto.offset.reset says
            self.source.rewind({tp: offset if offset >= 0 else OFFSET_BEGINNING for tp, offset in committed.items()})

    def _committed_offsets(self) -> dict[TopicPartitionKey, int]:
        """The group's committed offsets of our partitions, waiting out brokers that are restarting."""
        while True:
            try:
                return self.source.committed(self._assigned, TXN_TIMEOUT_S)
            except KafkaException as error:
                if self.stop_requested.is_set():
                    raise DaemonError(f"cannot read the committed offsets: {error}") from error
                log.warning("cannot read the committed offsets yet (%s), retrying", error)
                time.sleep(1.0)

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
        if not self._throttled and depth >= self.config.inference.queue_max and self._assigned:
            self.source.pause()
            self._throttled = True
            log.debug("paused %d partitions at queue depth %d", len(self._assigned), depth)
        elif self._throttled and depth < self.config.inference.queue_max // 2:
            self.source.resume()
            self._throttled = False
            if self._held:  # still waiting for the schema registry
                self.source.pause(list(self._held))
        self.metrics.partitions_paused.set(len(self.source.paused))

    def _on_assign(self, partitions: list[TopicPartitionKey]) -> None:
        self._assigned = sorted(set(self._assigned) | set(partitions))
        log.info("assigned %s", ", ".join(f"{t}[{p}]" for t, p in partitions))
        self.metrics.ready.set()  # bundle loaded (the pipeline exists) and in the group, even with no partition to own

    def _on_revoke(self, partitions: list[TopicPartitionKey]) -> None:
        log.info("revoking %d partitions: committing work in flight", len(partitions))
        self._drain()
        self.pipeline.store.release_all()
        self._assigned = [tp for tp in self._assigned if tp not in set(partitions)]
        for tp in partitions:
            self._held.pop(tp, None)

    def _on_lost(self, partitions: list[TopicPartitionKey]) -> None:
        log.warning("lost %d partitions: uncommitted work is dropped and will be redone by their new owner", len(partitions))
        self._forget_uncommitted()
        self.pipeline.store.release_all()
        self._assigned = [tp for tp in self._assigned if tp not in set(partitions)]
        for tp in partitions:
            self._held.pop(tp, None)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S or not self._assigned:
            return
        self._lag_at = now
        for (topic, partition), lag in self.source.lag().items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)
