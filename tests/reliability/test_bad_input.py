"""The bad-input matrix through a running daemon: each input is dead-lettered with its reason or
handled correctly, and the daemon never stops (a valid sentinel alert sent last is classified)."""

from __future__ import annotations

import pytest

from broker_filter_proving.reliability.bad_input import (
    MANY_POINTS,
    MATRIX_MAX_ID_CHARS,
    ClassifiedExpected,
    DeadLetterExpected,
    bad_inputs,
    sentinel,
)
from broker_filter_proving.reliability.harness import DaemonProcess, OutputWatcher, produce, scrape, write_config
from broker_filter_proving.reliability.scenarios import create_topics
from broker_filter.outputs import decode
from broker_filter_proving.local_kafka import free_port

pytestmark = pytest.mark.kafka

MAX_POINTS_PER_OBJECT = 2000
#: The input topic takes the 100,000-point alert (~14 MB); the daemon's consumer reads it with
#: librdkafka's defaults (fetch.max.bytes 50 MB, receive.message.max.bytes 100 MB).
INPUT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def test_every_bad_input_is_dead_lettered_or_handled_and_the_daemon_goes_on(kafka_bootstrap, deployment, ztf_seeds, tmp_path):
    cases = bad_inputs(ztf_seeds, max_points_per_object=MAX_POINTS_PER_OBJECT)
    sentinel_object, sentinel_payload = sentinel(ztf_seeds)
    payloads = [p for case in cases for p in case.payloads] + [sentinel_payload]
    owners = [case for case in cases for _ in case.payloads]
    target = deployment(kafka_bootstrap)
    create_topics(target, 1, {"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)})
    positions = produce(kafka_bootstrap, target.input_topic, payloads, [None] * len(payloads), message_max_bytes=INPUT_MAX_MESSAGE_BYTES)
    port = free_port()
    config = write_config(tmp_path / "daemon.toml", target, state={"path": str(tmp_path / "state.sqlite"), "max_points_per_object": MAX_POINTS_PER_OBJECT},
                          metrics={"port": port}, scoring={"min_points": 20}, inference={"max_batch": 64, "max_wait_ms": 100.0, "device": "cpu"},
                          limits={"max_id_chars": MATRIX_MAX_ID_CHARS})
    with OutputWatcher(target) as watcher:
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            watcher.wait_for(len(payloads), timeout=300, alive=daemon.alive)
            assert daemon.alive(), "the daemon stopped on bad input"
            metrics = scrape("127.0.0.1", port)
        finally:
            status = daemon.terminate()
        messages = watcher.messages()
    assert status == 0, daemon.log_tail()

    letters = {int(h["origin"].decode().rsplit("@", 1)[1]): (value, h) for topic, value, h in messages if topic == target.dead_letter_topic}
    records = [decode("classification", value) for topic, value, _ in messages if topic == target.classification_topic]
    assert len(letters) + len(records) == len(payloads), "each input must have exactly one output"

    failures = []
    for case in cases:
        indices = [i for i, owner in enumerate(owners) if owner is case]
        if isinstance(case.expected, DeadLetterExpected):
            for i in indices:
                letter = letters.get(positions[i][1])
                if letter is None:
                    failures.append(f"{case.name}: no dead letter")
                    continue
                value, headers = letter
                if headers["reason"].decode() not in case.expected.reasons:
                    failures.append(f"{case.name}: reason {headers['reason'].decode()}, expected {case.expected.reasons}")
                if case.expected.keeps_payload and value != payloads[i]:
                    failures.append(f"{case.name}: the dead letter does not carry the original bytes")
        else:
            assert isinstance(case.expected, ClassifiedExpected)
            mine = [r for r in records if r["object_id"] in _objects_of(case)]
            try:
                assert len(mine) == len(indices), f"{len(mine)} records for {len(indices)} inputs"
                case.expected.check(mine)
            except AssertionError as error:
                failures.append(f"{case.name}: {error}")
    assert not failures, "\n".join(failures)
    assert [r["object_id"] for r in records][-1] == sentinel_object, "the sentinel sent last was not classified last"
    reasons = {k for k in metrics if k.startswith("broker_filter_alerts_dead_lettered_total")}
    assert sum(metrics[k] for k in reasons) == len(letters)
    # the 100,000-point alert is classified on its newest points; the rest is counted, with its reason
    assert metrics['broker_filter_points_trimmed_total{reason="too_many_points"}'] >= MANY_POINTS - MAX_POINTS_PER_OBJECT
    assert MANY_POINTS > MAX_POINTS_PER_OBJECT


def _objects_of(case) -> set[str]:
    from broker_filter.streams.codec import AlertDecoder

    return {AlertDecoder().decode(p).object_id for p in case.payloads}
