"""``broker-filter produce SOURCE... --topic T``: load archived alerts into a Kafka topic.

Each alert travels as ZTF publishes it (a one-record Avro container, ``item.payload``),
keyed by its object id, at ``--rate`` alerts per second or as fast as the broker takes
them. Undecodable records are produced too (unkeyed) unless ``--skip-invalid``: a replayed
night should reach the daemon as it was, bad packets included. A message the client refuses
(larger than ``message.max.bytes``) is counted and skipped, not a stop. Whatever ends the run
(the end, an error, Ctrl-C), what was sent is flushed first and the summary says where to
resume: ``--start-at`` the summary's ``next``, in the same ``--order``, sends the rest without
duplicates. Any message the broker did not acknowledge makes the command exit 1.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from broker_filter.logging_setup import fatal, progress_bar, warn


@dataclass
class ProduceSummary:
    produced: int = 0  # handed to the producer
    delivered: int = 0  # acknowledged by the broker
    undecodable: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    next: int = 0  # position (in --order) of the first alert not handed to the producer: --start-at this
    stopped: str = ""  # why the run ended early ("" when every alert was sent)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("produce", help="load archived alerts (.avro, .tar.gz, folders) into a Kafka topic")
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="alert files, nightly tarballs or folders")
    parser.add_argument("--topic", required=True, help="topic to write to (created with --partitions if missing)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: the config's [kafka] bootstrap_servers)")
    parser.add_argument("--config", type=Path,
                        help="daemon TOML config: its [kafka] bootstrap_servers and client properties are used")
    parser.add_argument("--client", action="append", default=[], metavar="KEY=VALUE",
                        help="extra librdkafka property (repeatable), e.g. security.protocol=SASL_SSL "
                             "or sasl.password.file=/run/secret")
    parser.add_argument("--rate", type=float, help="alerts per second (default: as fast as possible)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the topic if it must be created (default 1)")
    parser.add_argument("--order", choices=("file", "time"), default="file",
                        help="file order (streams, constant memory) or observation-time order (reads all first)")
    parser.add_argument("--skip-invalid", action="store_true", help="do not produce records that fail to decode")
    parser.add_argument("--start-at", type=int, default=0, metavar="N",
                        help="skip the first N alerts (in --order): resume where a summary's 'next' says")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=_produce)


def _kafka_settings(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    from broker_filter.config import load_config

    kafka = load_config(args.config).kafka if args.config else None
    bootstrap = args.bootstrap_servers or (kafka.bootstrap_servers if kafka else None)
    if not bootstrap:
        raise ValueError("give --bootstrap-servers or --config")
    client = dict(kafka.client) if kafka else {}
    for pair in args.client:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--client expects KEY=VALUE, got {pair!r}")
        client[key] = value
    return bootstrap, client


def _produce(args: argparse.Namespace) -> int:
    from broker_filter.config import ConfigError
    from broker_filter.streams.archive import iter_archive
    from broker_filter.streams.kafka import DeliveryError, KafkaSink, ensure_topics
    from broker_filter.streams.kafka_admin import TopicError
    from broker_filter.streams.kafka_config import KafkaConfigError

    try:
        bootstrap, client = _kafka_settings(args)
        missing = [str(path) for path in args.sources if not path.exists()]
        if missing:
            raise FileNotFoundError(f"no such alert source: {', '.join(missing)}")
        items = iter_archive(args.sources, order=args.order)
        ensure_topics(bootstrap, {args.topic: args.partitions}, client=client)
        sink = KafkaSink(bootstrap, client=client)
    except (ValueError, ConfigError, KafkaConfigError, TopicError, FileNotFoundError) as exc:
        return fatal(f"broker-filter produce: {exc}")
    summary = ProduceSummary(next=args.start_at)
    started = time.monotonic()
    try:
        for position, item in enumerate(progress_bar(items, desc="produce", unit=" alerts")):
            if position < args.start_at:
                continue
            _send(sink, item, args, summary, started)
            summary.next = position + 1
    except KeyboardInterrupt:
        summary.stopped = "interrupted"
    except Exception as exc:  # noqa: BLE001 - whatever stops the run, what was sent is flushed and the summary says where
        summary.stopped = f"{type(exc).__name__}: {exc}"
    try:
        sink.flush()
    except DeliveryError as exc:
        summary.failed += exc.count
        warn(f"broker-filter produce: {exc}")
    summary.seconds = time.monotonic() - started
    summary.delivered = sink.counts.delivered
    if summary.stopped:
        warn(f"broker-filter produce: stopped ({summary.stopped}); resume with --start-at {summary.next}")
    _print_summary(summary, args)
    return 1 if summary.failed or summary.stopped else 0


def _send(sink, item, args: argparse.Namespace, summary: ProduceSummary, started: float) -> None:
    """One archive item to the topic; a message the client refuses is counted, not a stop."""
    from confluent_kafka import KafkaException

    if item.alert is None:
        summary.undecodable += 1
        if args.skip_invalid:
            summary.skipped += 1
            return
    if args.rate:
        _wait_for_slot(started, summary.produced, args.rate)
    try:
        sink.produce(args.topic, item.payload, key=item.alert.object_id if item.alert else None)
    except KafkaException as exc:  # e.g. MSG_SIZE_TOO_LARGE, refused before it leaves
        summary.failed += 1
        warn(f"broker-filter produce: {item.origin} #{item.position} not sent: {exc}")
        return
    summary.produced += 1


def _wait_for_slot(started: float, sent: int, rate: float) -> None:
    """Pace by schedule (message n at started + n/rate), so short stalls are caught up."""
    delay = started + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _print_summary(summary: ProduceSummary, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({**asdict(summary), "rate": summary.rate, "topic": args.topic}))
        return
    print(
        f"delivered {summary.delivered} of {summary.produced} alerts to {args.topic} in {summary.seconds:.2f} s "
        f"({summary.rate:,.0f} alerts/s); undecodable {summary.undecodable} "
        f"(skipped {summary.skipped}); delivery failures {summary.failed}; next {summary.next}"
        + (f"; stopped: {summary.stopped}" if summary.stopped else "")
    )
