"""Kafka source and sink: raw messages in, bytes out, offsets committed by transactions.

The source yields :class:`KafkaMessage` (bytes plus coordinates); decoding is the caller's
job (:class:`broker_filter.streams.codec.AlertDecoder`), so a message that cannot be decoded still has
everything needed to dead-letter it. Auto-commit is off: the daemon commits the input
offsets inside the same transaction as its outputs (exactly once), or with
:meth:`KafkaSource.commit` after its outputs are delivered (at least once).

Commit order in exactly-once mode (what the daemon does with these pieces)::

    sink.begin()
    sink.produce(...) for every output of the batch
    sink.send_offsets(offsets_after(batch), source.group_metadata())
    sink.commit()          # outputs and input offsets become visible together

A failed delivery is never swallowed: the sink counts it, and ``flush`` / ``commit``
raise :class:`DeliveryError` (after aborting the transaction) so the batch is re-read.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from broker_filter.streams.kafka_admin import delete_topics, ensure_topics
from broker_filter.streams.kafka_config import client_config, redact

__all__ = [
    "DeliveryError",
    "FatalProducerError",
    "KafkaMessage",
    "KafkaSink",
    "KafkaSource",
    "KafkaSourceError",
    "TransactionAbortedError",
    "delete_topics",
    "ensure_topics",
    "offsets_after",
    "redact",
]

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]

# Defaults the user's properties may override. librdkafka backs off fetch.queue.backoff.ms
# (1 s by default) each time its prefetch queue (64 MB) is full; with alerts of ~100 KiB
# that happens every ~700 messages and stalls the stream for a second each time
# (measured by `broker-filter bench kafka`).
SOURCE_DEFAULTS = {"fetch.queue.backoff.ms": 10}
RebalanceHook = Callable[[list[TopicPartitionKey]], None]
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
STUCK_GRACE_S = 10.0  # beyond its own timeout, before a transactional call counts as stuck


class _StuckCall(RuntimeError):
    """A librdkafka call did not return in time (its thread is left blocked)."""


def _call_within(call: Callable[..., Any], args: Sequence[Any], seconds: float) -> None:
    """``call(*args)`` in a daemon thread; its exception re-raised here, :class:`_StuckCall` after ``seconds``."""
    import threading

    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call(*args)
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=target, name="kafka-txn", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _StuckCall(f"{getattr(call, '__name__', 'call')} did not return within {seconds:.0f} s")
    if outcome[0] is not None:
        raise outcome[0]


def _retriable_codes() -> frozenset[int]:
    """Coordinator moves and loads: retriable by nature, whatever flag librdkafka set on them."""
    from confluent_kafka import KafkaError

    return frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                      KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                      KafkaError._ALL_BROKERS_DOWN, KafkaError.CONCURRENT_TRANSACTIONS})


class KafkaSourceError(RuntimeError):
    """The consumer cannot go on (a fatal client error, a subscribed topic that does not exist)."""


class DeliveryError(RuntimeError):
    """Messages were not delivered; ``failures`` says which and why (first 10 kept)."""

    def __init__(self, count: int, failures: Sequence[DeliveryFailure]) -> None:
        shown = "; ".join(f"{f.topic}: {f.reason}" for f in failures[:3])
        super().__init__(f"{count} message(s) not delivered ({shown})")
        self.count = count
        self.failures = list(failures)


class TransactionAbortedError(RuntimeError):
    """The transaction was aborted (by us or the broker): re-read the batch from the last commit."""


class _ProducerReplaced(TransactionAbortedError):
    """The producer was stuck and replaced: its transaction is aborted, the new one has none open."""


class FatalProducerError(RuntimeError):
    """The producer is unusable (fenced by a newer instance, or a fatal client error): exit."""


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """One consumed message with its coordinates; ``too_large`` is over the source's size limit."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    too_large: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    topic: str
    partition: int | None
    key: bytes | None
    reason: str


def offsets_after(messages: Iterable[KafkaMessage]) -> dict[TopicPartitionKey, int]:
    """The offsets to commit after processing ``messages``: last offset + 1 per partition."""
    positions: dict[TopicPartitionKey, int] = {}
    for message in messages:
        key = (message.topic, message.partition)
        positions[key] = max(positions.get(key, -1), message.offset + 1)
    return positions


def _topic_partitions(offsets: Mapping[TopicPartitionKey, int]):
    from confluent_kafka import TopicPartition

    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]


class KafkaSource:
    """A consumer-group member that returns batches of raw messages.

    ``isolation="read_committed"`` (default) hides aborted transactions, so our own output
    topics can be chained. ``on_assign`` / ``on_revoke`` / ``on_lost`` are called with
    ``[(topic, partition)]`` during rebalances; the daemon uses ``on_revoke`` to finish or
    abort its transaction before the partitions move. :meth:`pause` applies to partitions
    assigned later too, until :meth:`resume` (backpressure must survive a rebalance).
    """

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        *,
        client: Mapping[str, Any] | None = None,
        isolation: Literal["read_committed", "read_uncommitted"] = "read_committed",
        auto_offset_reset: Literal["earliest", "latest", "error"] = "earliest",
        max_message_bytes: int | None = None,
        on_assign: RebalanceHook | None = None,
        on_revoke: RebalanceHook | None = None,
        on_lost: RebalanceHook | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.topics = list(topics)
        self.max_message_bytes = max_message_bytes
        self._hooks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._pause_all = False
        self._paused: set[TopicPartitionKey] = set()
        config = client_config(
            bootstrap,
            {**SOURCE_DEFAULTS, **(client or {})},
            role="consumer",
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "auto.offset.reset": auto_offset_reset,
            },
        )
        log.info("kafka source config: %s", redact(config))
        self._cooperative = (
            "cooperative" in str(config.get("partition.assignment.strategy", ""))
            or config.get("group.protocol") == "consumer"
        )
        self._consumer = Consumer(config)
        self._consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    # -- consuming -----------------------------------------------------------------------

    def consume(self, num_messages: int = 500, timeout: float = 1.0) -> list[KafkaMessage]:
        """Up to ``num_messages`` messages; returns as soon as that many are there, else after ``timeout``.

        librdkafka waits out the whole ``timeout`` while fewer than ``num_messages`` are
        available, so a daemon closing micro-batches by age should pass a short timeout.
        """
        batch: list[KafkaMessage] = []
        for raw in self._consumer.consume(num_messages, timeout):
            error = raw.error()
            if error is None:
                batch.append(self._message(raw))
            else:
                self._handle_error(error)
        return batch

    def _message(self, raw: Any) -> KafkaMessage:
        value = raw.value() or b""
        timestamp_type, timestamp = raw.timestamp()
        return KafkaMessage(
            value=value,
            key=raw.key(),
            topic=raw.topic(),
            partition=raw.partition(),
            offset=raw.offset(),
            timestamp_ms=timestamp if timestamp_type else None,  # 0 = TIMESTAMP_NOT_AVAILABLE
            headers=tuple(raw.headers() or ()),
            too_large=self.max_message_bytes is not None and len(value) > self.max_message_bytes,
        )

    def _handle_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.fatal() or error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
            raise KafkaSourceError(f"kafka source ({', '.join(self.topics)}): {error.str()}")
        log.warning("kafka source: %s (the client retries)", error.str())

    # -- offsets -------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit ``{(topic, partition): next offset}`` synchronously (at-least-once mode)."""
        if offsets:
            self._consumer.commit(offsets=_topic_partitions(offsets), asynchronous=False)

    def committed(self, partitions: Iterable[TopicPartitionKey], timeout: float = 10.0) -> dict[TopicPartitionKey, int]:
        """The group's committed offsets (-1001 where none)."""
        result = self._consumer.committed(_topic_partitions({p: -1001 for p in partitions}), timeout=timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in result}

    def rewind(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Seek partitions back to ``offsets`` (after an aborted transaction: re-read the batch)."""
        for tp in _topic_partitions(offsets):
            self._consumer.seek(tp)

    def group_metadata(self) -> Any:
        """What :meth:`KafkaSink.send_offsets` needs to commit offsets for this group."""
        return self._consumer.consumer_group_metadata()

    # -- flow control and introspection --------------------------------------------------

    def assignment(self) -> list[TopicPartitionKey]:
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def pause(self, partitions: Iterable[TopicPartitionKey] | None = None) -> None:
        """Stop fetching from ``partitions`` (all assigned, now and later, when None)."""
        if partitions is None:
            self._pause_all = True
            partitions = self.assignment()
        partitions = list(partitions)
        self._consumer.pause(_topic_partitions({p: -1001 for p in partitions}))
        self._paused.update(partitions)

    def resume(self, partitions: Iterable[TopicPartitionKey] | None = None) -> None:
        if partitions is None:
            self._pause_all = False
            partitions = list(self._paused)
        partitions = [p for p in partitions if p in self._paused]
        self._consumer.resume(_topic_partitions({p: -1001 for p in partitions}))
        self._paused.difference_update(partitions)

    @property
    def paused(self) -> frozenset[TopicPartitionKey]:
        return frozenset(self._paused)

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Messages behind the high watermark per assigned partition (for the consumer_lag gauge).

        Uses the watermarks cached from fetch responses (no broker round trip per call);
        partitions not fetched from yet are left out rather than guessed.
        """
        lags: dict[TopicPartitionKey, int] = {}
        for tp in self._consumer.position(self._consumer.assignment()):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                lags[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
        return lags

    def close(self) -> None:
        """Leave the group (partitions move to the other members at once)."""
        self._consumer.close()

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- rebalance callbacks -------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._call_hook("assign", keys)
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if self._pause_all and partitions:
            consumer.pause(partitions)
            self._paused.update(keys)

    def _revoked(self, consumer: Any, partitions: list) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._call_hook("revoke", keys)
        self._paused.difference_update(keys)

    def _lost(self, consumer: Any, partitions: list) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._call_hook("lost", keys)
        self._paused.difference_update(keys)

    def _call_hook(self, name: str, keys: list[TopicPartitionKey]) -> None:
        hook = self._hooks[name]
        if hook is not None:
            hook(keys)


@dataclass
class DeliveryCounts:
    """Delivery reports seen so far; ``failures`` keeps the first few for the error message."""

    delivered: int = 0
    failed: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)

    purged: int = 0

    def record(self, error: Any, message: Any) -> None:
        from confluent_kafka import KafkaError

        if error is None:
            self.delivered += 1
            return
        if error.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self.purged += 1  # dropped on purpose by abort_transaction: not a failure
            return
        self.failed += 1
        if len(self.failures) < 10:
            self.failures.append(DeliveryFailure(message.topic(), message.partition(), message.key(), error.str()))



def commit_batch(sink: KafkaSink, source: KafkaSource, offsets: Mapping[TopicPartitionKey, int],
                 produce: Callable[[], None], *, exactly_once: bool, before_offsets: Callable[[], None] = lambda: None) -> Exception | None:
    """Write a batch's outputs and commit its input offsets with them; the one commit sequence
    of every stage that consumes and produces (the daemon, the re-keying stage).

    Exactly once: one transaction holds the outputs and the offsets. At least once: the
    outputs are flushed before the offsets are committed, so a crash between the two
    repeats outputs and loses none. ``before_offsets`` runs after the outputs are queued and
    before the offsets go (the daemon flushes its state there). Returns None once committed,
    or the error of an aborted batch (its transaction aborted), which the caller re-reads.
    :class:`FatalProducerError` (fenced by a newer instance) propagates, and so does a
    failure to abort.
    """
    from confluent_kafka import KafkaException

    try:
        if exactly_once:
            sink.begin()
            produce()
            before_offsets()
            sink.send_offsets(offsets, source.group_metadata())
            sink.commit()
        else:
            produce()
            sink.flush()
            before_offsets()
            source.commit(offsets)
    except FatalProducerError:
        raise
    except (TransactionAbortedError, DeliveryError, KafkaException) as error:
        if exactly_once and not isinstance(error, TransactionAbortedError):  # the sink aborted those already
            sink.abort()
        return error
    return None


class KafkaSink:
    """An idempotent producer, transactional when ``transactional_id`` is given.

    Idempotence (on by default) makes the broker drop retried duplicates, so a message is
    written once per ``produce`` even across network errors. With a transactional id the
    small API below wraps librdkafka's init/begin/send_offsets/commit/abort and turns its
    error flags into three outcomes: success, :class:`TransactionAbortedError` (re-read and
    retry) or :class:`FatalProducerError` (another instance took over: exit).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client: Mapping[str, Any] | None = None,
        transactional_id: str | None = None,
        idempotent: bool = True,
        linger_ms: float = 5.0,
        timeout: float = 30.0,
        interrupted: Callable[[], bool] | None = None,
    ) -> None:
        """``interrupted``: polled between the retries of ``init_transactions``, which otherwise
        go on until the brokers answer (a daemon started before its brokers waits for them)."""
        self.transactional_id = transactional_id
        self.timeout = timeout
        self.counts = DeliveryCounts()
        self._failed_before_txn = 0
        self._interrupted = interrupted or (lambda: False)
        self._abandoned: list[Any] = []  # producers stuck inside librdkafka, kept alive (see _replace_producer)
        ours: dict[str, Any] = {"enable.idempotence": idempotent or bool(transactional_id), "linger.ms": linger_ms}
        if transactional_id:
            ours["transactional.id"] = transactional_id
        self._config = client_config(bootstrap, client, role="producer", **ours)
        log.info("kafka sink config: %s", redact(self._config))
        self._producer = self._new_producer()

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        producer = Producer(self._config)
        if self.transactional_id:
            self._producer = producer
            self._transact(producer.init_transactions, self.timeout, patient=True)
        return producer

    # -- producing -----------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes | str]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one message; waits for queue space instead of failing when the queue is full."""
        kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": self.counts.record}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self._producer.poll(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued message; raise :class:`DeliveryError` if any was not delivered."""
        remaining = self._producer.flush(self.timeout if timeout is None else timeout)
        if remaining:
            raise DeliveryError(remaining, [DeliveryFailure("*", None, None, f"{remaining} still queued after flush timeout")])
        self.raise_failures()

    def raise_failures(self) -> None:
        """Raise :class:`DeliveryError` if any delivery failed since the last call."""
        new = self.counts.failed - self._failed_before_txn
        if new:
            self._failed_before_txn = self.counts.failed
            raise DeliveryError(new, self.counts.failures)

    # -- transactions --------------------------------------------------------------------

    def begin(self) -> None:
        self._failed_before_txn = self.counts.failed
        self._transact(self._producer.begin_transaction)

    def send_offsets(self, offsets: Mapping[TopicPartitionKey, int], group_metadata: Any) -> None:
        """Add the consumer's next offsets to the open transaction (committed with it)."""
        if offsets:
            self._transact(self._producer.send_offsets_to_transaction, _topic_partitions(offsets), group_metadata, self.timeout)

    def commit(self) -> None:
        """Commit the open transaction, or abort it and raise if any of its messages failed."""
        self._flush_in_transaction()
        try:
            self.raise_failures()
        except DeliveryError as exc:
            self.abort()
            raise TransactionAbortedError(f"aborted: {exc}") from exc
        self._transact(self._producer.commit_transaction, self.timeout)

    def abort(self) -> None:
        """Abort the open transaction (a producer replaced because it was stuck has none left open)."""
        try:
            self._transact(self._producer.abort_transaction, self.timeout)
        except _ProducerReplaced:
            pass

    def _flush_in_transaction(self) -> None:
        """Deliver the transaction's messages, mapping a transactional error met on the way.

        Adding a partition to the transaction happens during delivery, so a fencing (a newer
        instance with our transactional id) can surface in ``flush`` rather than in
        ``commit_transaction``; confluent-kafka then raises a ``KafkaException`` or, as seen
        in CI with 2.16, the bare ``KafkaError`` object, which is no ``Exception`` subclass and
        escapes every ``except Exception``. Both become our types, as in :meth:`_transact`.
        """
        from confluent_kafka import KafkaError, KafkaException

        try:
            self._producer.flush(self.timeout)
        except KafkaException as exc:
            self._raise_transactional(exc.args[0], exc)
        except:  # noqa: E722 - the bare KafkaError object (see above) matches nothing narrower
            error = sys.exc_info()[1]
            if not isinstance(error, KafkaError):
                raise
            self._raise_transactional(error, None)

    def _raise_transactional(self, error: Any, cause: BaseException | None) -> None:
        if error.fatal():
            raise FatalProducerError(f"transactional producer {self.transactional_id!r}: {error.str()}") from cause
        self.abort()
        raise TransactionAbortedError(f"aborted: {error.str()}") from cause

    def _transact(self, call: Callable[..., Any], *args: Any, patient: bool = False) -> None:
        """Run a transactional call, retrying retriable errors, mapping the others to our types.

        Retries back off exponentially up to ``MAX_BACKOFF_S``; they stop after ``timeout``
        seconds, or never (``patient``, for ``init_transactions``: the brokers may still be
        starting or electing a coordinator) unless ``interrupted``. A call that does not
        return within ``timeout`` plus a grace period is stuck inside librdkafka: the producer
        is replaced and the transaction reported aborted (see :meth:`_replace_producer`).
        """
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout
        backoff = MIN_BACKOFF_S
        while True:
            try:
                _call_within(call, args, self.timeout + STUCK_GRACE_S)
                return
            except _StuckCall as stuck:
                self._replace_producer(stuck)
                raise _ProducerReplaced(f"aborted: {stuck}; the producer was replaced") from None
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal():
                    raise FatalProducerError(f"transactional producer {self.transactional_id!r}: {error.str()}") from exc
                if error.txn_requires_abort():
                    self.abort()
                    raise TransactionAbortedError(f"aborted: {error.str()}") from exc
                retriable = error.retriable() or error.code() in _retriable_codes()
                if not retriable or (not patient and time.monotonic() > deadline) or self._interrupted():
                    raise
                log.warning("kafka sink: %s (retrying in %.1f s)", error.str(), backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _replace_producer(self, stuck: Exception) -> None:
        """Give up on a producer whose transactional call never returns; start a new one.

        librdkafka 2.x can block in ``send_offsets_to_transaction`` past its timeout once the
        group coordinator went away and came back (librdkafka issues 5456 and 5511; seen
        here after a broker restart). The new producer's ``init_transactions`` fences the old
        one and aborts its open transaction on the broker, so nothing it sent becomes
        visible. The old one cannot be destroyed while a thread is blocked in it: it is kept.
        """
        log.warning("kafka sink: %s; replacing the producer (its transaction is aborted)", stuck)
        self._abandoned.append(self._producer)
        self._producer = self._new_producer()

    def close(self) -> None:
        """Deliver what is queued (raising on failures); an open transaction is aborted by the broker later."""
        self.flush()

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(self.timeout)
