"""``broker-filter bench kafka``: our Kafka source and sink against bare confluent-kafka loops.

Both sides move the same real alert payloads (the sample archive, cycled to ``--messages``)
through the same broker with the same client settings: produce into a fresh topic each,
consume (fresh group each) from one topic filled beforehand. Each round runs both sides
back to back, alternating which goes first, and yields one ours/bare ratio per stage; the
median of those paired ratios is reported, so that a noisy neighbour on a shared machine,
which slows whole rounds, penalises neither side. Client CPU time per message (all
threads of this process, librdkafka's included) is reported too: it is what our layer
adds, and it is far less sensitive to other load than wall-clock rates. The headline is
the lower of the produce and consume rate ratios (target: ours >= 0.8 of bare). Without
``--bootstrap-servers`` a local broker is started (and stopped) by the benchmark.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from broker_filter_proving import REPO
from broker_filter_proving.bench.report import BenchResult

DEFAULT_ALERTS = REPO / "data" / "alerts"
PRODUCER_SETTINGS = {"enable.idempotence": True, "linger.ms": 5}
# librdkafka waits fetch.queue.backoff.ms (default 1 s) whenever its prefetch queue is full,
# which ~0.75 k alerts of 87 KiB do: a 1 s stall per refill would measure the backoff, not
# the client. Both sides get the same value.
CONSUMER_SETTINGS = {"fetch.queue.backoff.ms": 10}
BATCH = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", help="an existing broker (default: start a local one)")
    parser.add_argument("--alerts", type=Path, default=DEFAULT_ALERTS,
                        help=f"alert archive to take payloads from (default {DEFAULT_ALERTS})")
    parser.add_argument("--messages", type=int, default=2000, help="messages per round and side (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (default 5); medians are reported")
    parser.add_argument("--partitions", type=int, default=2, help="partitions of the benchmark topics (default 2)")


def run(args: argparse.Namespace) -> BenchResult:
    from broker_filter.streams.archive import iter_archive
    from broker_filter_proving.local_kafka import LocalKafka

    payloads = [(item.payload, item.alert.object_id.encode()) for item in iter_archive([args.alerts], order="file") if item.alert]
    if not payloads:
        raise SystemExit(f"no decodable alerts under {args.alerts}")
    messages = list(itertools.islice(itertools.cycle(payloads), args.messages))
    with ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(LocalKafka()).bootstrap
        samples = _measure(bootstrap, messages, args.rounds, args.partitions)
    size = sum(len(v) for v, _ in messages) / len(messages)
    rows = [_row(stage, samples, len(messages)) for stage in ("produce", "consume")]
    return BenchResult(
        name="kafka",
        columns=["stage", "bare (msg/s)", "ours (msg/s)", "ours / bare (median)", "min", "max",
                 "bare CPU (us/msg)", "ours CPU (us/msg)"],
        rows=rows,
        speedup=min(row[3] for row in rows),
        notes=[f"{len(messages)} real alert payloads per round and side (mean {size / 1024:.1f} KiB), "
               f"medians of {args.rounds} paired rounds, {args.partitions} partitions, "
               f"broker {'given' if args.bootstrap_servers else 'local (started by the benchmark)'}"],
        extra={"messages": len(messages), "mean_payload_bytes": size, "rounds": args.rounds},
    )


Sample = tuple[float, float]  # (wall seconds, process CPU seconds)


def _row(stage: str, samples: dict[tuple[str, str], list[Sample]], count: int) -> list:
    bare, ours = samples[("bare", stage)], samples[("ours", stage)]
    paired = [b[0] / o[0] for o, b in zip(ours, bare, strict=True)]  # rate ratio = inverse time ratio, same round
    rate = lambda runs: statistics.median(count / wall for wall, _ in runs)  # noqa: E731
    cpu = lambda runs: statistics.median(1e6 * cpu_s / count for _, cpu_s in runs)  # noqa: E731
    return [stage, rate(bare), rate(ours), statistics.median(paired), min(paired), max(paired), cpu(bare), cpu(ours)]


def _measure(
    bootstrap: str, messages: list[tuple[bytes, bytes]], rounds: int, partitions: int
) -> dict[tuple[str, str], list[Sample]]:
    """(wall, CPU) per (side, stage), one per round; both sides run back to back in each round."""
    from broker_filter.streams.kafka_admin import delete_topics, ensure_topics

    filled = f"bench-consume-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {filled: partitions})
    samples: dict[tuple[str, str], list[Sample]] = {}
    try:
        _bare_produce(bootstrap, filled, messages)
        for round_number in range(rounds):
            sides = ("bare", "ours") if round_number % 2 == 0 else ("ours", "bare")
            for side in sides:
                topic = f"bench-produce-{side}-{uuid.uuid4().hex[:8]}"
                ensure_topics(bootstrap, {topic: partitions})
                samples.setdefault((side, "produce"), []).append(SIDES[side][0](bootstrap, topic, messages))
                delete_topics(bootstrap, [topic])
            for side in sides:
                samples.setdefault((side, "consume"), []).append(SIDES[side][1](bootstrap, filled, messages))
    finally:
        delete_topics(bootstrap, [filled])
    return samples


class _Clock:
    """Wall and process CPU time from ``start()`` (all threads: librdkafka's count too)."""

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def sample(self) -> Sample:
        return time.perf_counter() - self._wall, time.process_time() - self._cpu


# Produce is timed from the first send to the last acknowledgement; consume from the first
# message received (joining the group before it is not throughput). Consumers never ask
# for more than remain: consume(n, timeout) waits out its timeout when n never arrive.

def _bare_produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> Sample:
    from confluent_kafka import Producer

    failed = []
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    report = lambda error, _message: error and failed.append(error)  # noqa: E731
    clock = _Clock()
    clock.start()
    for value, key in messages:
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"bare producer lost messages: {failed[:3]}")
    return clock.sample()


def _our_produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> Sample:
    from broker_filter.streams.kafka import KafkaSink

    sink = KafkaSink(bootstrap, linger_ms=PRODUCER_SETTINGS["linger.ms"])
    clock = _Clock()
    clock.start()
    for value, key in messages:
        sink.produce(topic, value, key=key)
    sink.flush()
    return clock.sample()


def _bare_consume(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> Sample:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed", **CONSUMER_SETTINGS})
    consumer.subscribe([topic])
    clock, received = _Clock(), 0
    while received < len(messages):
        batch = [m for m in consumer.consume(min(BATCH, len(messages) - received), 0.1) if m.error() is None]
        if batch and not received:
            clock.start()
        received += len(batch)
    elapsed = clock.sample()
    consumer.close()
    return elapsed


def _our_consume(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> Sample:
    from broker_filter.streams.kafka import KafkaSource

    with KafkaSource(bootstrap, f"bench-{uuid.uuid4().hex}", [topic], client=CONSUMER_SETTINGS) as source:
        clock, received = _Clock(), 0
        while received < len(messages):
            batch = source.consume(min(BATCH, len(messages) - received), 0.1)
            if batch and not received:
                clock.start()
            received += len(batch)
        return clock.sample()


SIDES = {"bare": (_bare_produce, _bare_consume), "ours": (_our_produce, _our_consume)}
